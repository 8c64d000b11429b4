//! Seeded command generation for property, recovery and crash tests: a three-instrument
//! test configuration (two USDT-M, one USDC-M) and a generator of realistic command
//! streams. Deterministic for a given seed (ChaCha8); never used by the engine itself.

use crate::fixtures::btcusdt;
use perpcore_types::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two USDT-M instruments, one USDC-M and one coin-M (BTCUSD_PERP), with three brackets each (cum per MARGIN §3:
/// 50,000 × (0.5% − 0.4%) = 50; 250,000 × (1% − 0.5%) + 50 = 1,300).
pub fn test_config() -> Config {
    // Collateral (MARGIN §4): stablecoins at 100%, BTC tiered by USD value, ETH by
    // quantity; USDT and BTC lend with interest; USD is only a quote unit.
    let tiers = |t: &[(&str, &str)]| {
        t.iter()
            .map(|(f, r)| CollateralTier {
                floor: Money::parse(f).unwrap(),
                ratio: Rate::parse(r).unwrap(),
            })
            .collect::<Vec<_>>()
    };
    let collateral = |unit, t: &[(&str, &str)], daily: &str| CollateralSpec {
        unit,
        tiers: tiers(t),
        individual_cap: None,
        platform_cap: None,
        daily_interest: Rate::parse(daily).unwrap(),
        interest_free: Money::from_int(100),
        auto_exchange_threshold: Some(Money::from_int(1_000)),
    };
    let specs = [
        (
            "USDT",
            Some(collateral(TierUnit::Usd, &[("0", "1")], "0.0003")),
        ),
        (
            "USDC",
            Some(collateral(TierUnit::Usd, &[("0", "1")], "0.0003")),
        ),
        (
            "BTC",
            Some(collateral(
                TierUnit::Usd,
                &[("0", "0.95"), ("100000", "0.9")],
                "0.0001",
            )),
        ),
        (
            "ETH",
            Some(collateral(
                TierUnit::Quantity,
                &[("0", "0.9"), ("100", "0.8")],
                "0.0001",
            )),
        ),
        ("USD", None),
    ];
    let assets = specs
        .into_iter()
        .enumerate()
        .map(|(i, (s, c))| AssetSpec {
            collateral: c,
            id: AssetId(i as u16),
            symbol: s.to_string(),
        })
        .collect();
    // Every instrument is fixtures::btcusdt() (brackets, fees, band, sizes) under its own
    // id, assets, tick and lot.
    let mk = |id: u32, sym: &str, base: u16, quote: u16, tick: &str, lot: &str| InstrumentSpec {
        id: InstrumentId(id),
        symbol: sym.into(),
        base_asset: AssetId(base),
        quote_asset: AssetId(quote),
        settle_asset: AssetId(quote),
        tick_size: Price::parse(tick).unwrap(),
        lot_size: Qty::parse(lot).unwrap(),
        ..btcusdt()
    };
    Config {
        assets,
        instruments: vec![
            mk(0, "BTCUSDT", 2, 0, "0.1", "0.001"),
            mk(1, "ETHUSDT", 3, 0, "0.01", "0.001"),
            mk(2, "BTCUSDC", 2, 1, "0.1", "0.001"),
            // Coin-M: 100 USD contracts settled in BTC.
            InstrumentSpec {
                kind: ContractKind::Inverse {
                    contract_value: Money::from_int(100),
                },
                quote_asset: AssetId(4),
                settle_asset: AssetId(2),
                lot_size: Qty::parse("1").unwrap(),
                ..mk(3, "BTCUSD_PERP", 2, 0, "0.1", "1")
            },
        ],
    }
}

/// A seeded stream: accounts (some sub-accounts), deposits, then a mix of orders of every
/// kind, cancels, amends, leverage and mode changes, margin moves, transfers and mark
/// moves that include jumps large enough to liquidate highly levered accounts.
pub struct Gen {
    rng: ChaCha8Rng,
    accounts: u64,
    next_order: u64,
    marks: Vec<i64>,
    live: Vec<(u64, OrderId)>,
    /// Commands that must follow the last one (a BTC index move after a BTC mark move).
    pending: Vec<Command>,
}

impl Gen {
    pub fn new(seed: u64, accounts: u64) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            accounts,
            next_order: 1,
            // Marks in ticks: 60,000.0 (tick 0.1), 3,000.00 (tick 0.01), 60,000.0.
            marks: vec![600_000, 300_000, 600_000, 600_000],
            live: Vec::new(),
            pending: Vec::new(),
        }
    }

    pub fn setup(&mut self) -> Vec<Command> {
        let mut v = Vec::new();
        for a in 1..=self.accounts {
            let parent = if a > 3 && a.is_multiple_of(7) {
                Some(AccountId(a - 1))
            } else {
                None
            };
            let parent = parent.filter(|p| !p.0.is_multiple_of(7));
            v.push(Command::CreateAccount {
                account: AccountId(a),
                parent,
            });
            let usdt = self.rng.gen_range(500..200_000);
            v.push(Command::Deposit {
                account: AccountId(a),
                asset: AssetId(0),
                amount: Money::from_int(usdt),
            });
            v.push(Command::Deposit {
                account: AccountId(a),
                asset: AssetId(1),
                amount: Money::from_int(usdt / 2 + 1),
            });
            // 0.01 to 5 BTC for the coin-M instrument.
            v.push(Command::Deposit {
                account: AccountId(a),
                asset: AssetId(2),
                amount: Money(self.rng.gen_range(1..500) * 10_000_000_000),
            });
        }
        for (i, m) in self.marks.iter().enumerate() {
            let tick = if i == 1 { 1_000_000 } else { 10_000_000 };
            v.push(Command::SetMarkPrice {
                instrument: InstrumentId(i as u32),
                price: Price(m * tick),
            });
        }
        // Index prices for the USD pools: BTC and ETH against USDT, USDC at 1 USD (USDT
        // itself is then worth 1 USD until the first BTC mark move sets a BTC/USD index:
        // no BTC/USD index, so C = 1).
        let index = |asset: u16, quote, price| Command::SetAssetIndex {
            asset: AssetId(asset),
            quote,
            price,
        };
        v.push(index(2, IndexQuote::Usdt, IndexPrice::from_int(60_000)));
        v.push(index(3, IndexQuote::Usdt, IndexPrice::from_int(3_000)));
        v.push(index(1, IndexQuote::Usd, IndexPrice::ONE));
        // Every third account multi-asset, every fifth unified (the later switch wins).
        for a in 1..=self.accounts {
            for (every, mode) in [(3, AssetMode::Multi), (5, AssetMode::Unified)] {
                if a.is_multiple_of(every) {
                    v.push(Command::SetAssetMode {
                        account: AccountId(a),
                        mode,
                    });
                }
            }
        }
        v
    }

    fn account(&mut self) -> AccountId {
        AccountId(self.rng.gen_range(1..=self.accounts + 1)) // +1: sometimes unknown
    }

    pub fn next_command(&mut self) -> Command {
        if let Some(c) = self.pending.pop() {
            return c;
        }
        let r = self.rng.gen_range(0..1000);
        let i = self.rng.gen_range(0..4u32);
        let inst = InstrumentId(i);
        let mark = self.marks[i as usize];
        match r {
            0..=79 => {
                // Mark move: mostly small, sometimes a jump of up to ±8%.
                let bp = if self.rng.gen_range(0..20) == 0 {
                    self.rng.gen_range(-800..=800)
                } else {
                    self.rng.gen_range(-30..=30)
                };
                let m = (mark + mark * bp / 10_000).max(100);
                self.marks[i as usize] = m;
                if i == 0 {
                    // BTC collateral follows the BTC mark, against USDT and against USD:
                    // BTC/USD = BTC/USDT × 1.000296667 plus 0–6 raw units (10^-12), so
                    // the conversion rate C = BTC/USD ÷ BTC/USDT has more than 8 decimals
                    // and is mostly not on the 12-decimal grid (rounded down there).
                    let usdt = IndexPrice::from_price(Price(m * 10_000_000));
                    let usd =
                        IndexPrice(usdt.raw() / 1_000_000_000 * 1_000_296_667 + (m % 7) as i128);
                    self.pending.push(Command::SetAssetIndex {
                        asset: AssetId(2),
                        quote: IndexQuote::Usd,
                        price: usd,
                    });
                    self.pending.push(Command::SetAssetIndex {
                        asset: AssetId(2),
                        quote: IndexQuote::Usdt,
                        price: usdt,
                    });
                }
                let tick = if i == 1 { 1_000_000 } else { 10_000_000 };
                Command::SetMarkPrice {
                    instrument: inst,
                    price: Price(m * tick),
                }
            }
            80..=599 => {
                let side = if self.rng.gen_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let off = self.rng.gen_range(-300..=300) * mark / 10_000;
                let price = PriceTicks(if self.rng.gen_range(0..50) == 0 {
                    mark * 2
                } else {
                    mark + off
                });
                let tif = match self.rng.gen_range(0..10) {
                    0..=5 => TimeInForce::Gtc,
                    6 => TimeInForce::Ioc,
                    7 => TimeInForce::Fok,
                    _ => TimeInForce::PostOnly,
                };
                let order_type = if self.rng.gen_range(0..12) == 0 {
                    OrderType::Market
                } else {
                    OrderType::Limit
                };
                let stp = match self.rng.gen_range(0..3) {
                    0 => StpMode::ExpireTaker,
                    1 => StpMode::ExpireMaker,
                    _ => StpMode::ExpireBoth,
                };
                let account = self.account();
                let order_id = OrderId(self.next_order);
                self.next_order += 1;
                let qty = QtyLots(self.rng.gen_range(1..3_000));
                self.live.push((account.0, order_id));
                Command::PlaceOrder(NewOrder {
                    account,
                    instrument: inst,
                    order_id,
                    side,
                    order_type,
                    tif: if order_type == OrderType::Market && tif == TimeInForce::PostOnly {
                        TimeInForce::Ioc
                    } else {
                        tif
                    },
                    price,
                    qty,
                    reduce_only: self.rng.gen_range(0..8) == 0,
                    close_position: self.rng.gen_range(0..60) == 0,
                    stp,
                })
            }
            600..=699 if !self.live.is_empty() => {
                let k = self.rng.gen_range(0..self.live.len());
                let (a, id) = self.live.swap_remove(k);
                Command::CancelOrder {
                    account: AccountId(a),
                    order_id: id,
                }
            }
            700..=819 if !self.live.is_empty() => {
                let k = self.rng.gen_range(0..self.live.len());
                let (a, id) = self.live[k];
                let price = if self.rng.gen_bool(0.7) {
                    Some(PriceTicks(
                        mark + self.rng.gen_range(-200..=200) * mark / 10_000,
                    ))
                } else {
                    None
                };
                let qty = if price.is_none() || self.rng.gen_bool(0.3) {
                    Some(QtyLots(self.rng.gen_range(1..3_000)))
                } else {
                    None
                };
                Command::AmendOrder {
                    account: AccountId(a),
                    order_id: id,
                    price,
                    qty,
                }
            }
            820..=849 => Command::SetLeverage {
                account: self.account(),
                instrument: inst,
                leverage: self.rng.gen_range(1..=130),
            },
            850..=879 => Command::SetMarginMode {
                account: self.account(),
                instrument: inst,
                mode: if self.rng.gen_bool(0.5) {
                    MarginMode::Isolated
                } else {
                    MarginMode::Cross
                },
            },
            880..=909 => Command::AdjustIsolatedMargin {
                account: self.account(),
                instrument: inst,
                delta: Money::from_int(self.rng.gen_range(-2_000..2_000)),
                position_side: PositionSide::Both,
            },
            910..=929 => Command::Withdraw {
                account: self.account(),
                asset: AssetId(self.rng.gen_range(0..2)),
                amount: Money::from_int(self.rng.gen_range(1..20_000)),
            },
            930..=949 => {
                let from = self.account();
                Command::Transfer {
                    from,
                    to: AccountId(if from.0.is_multiple_of(7) {
                        from.0 - 1
                    } else {
                        from.0 + 1
                    }),
                    asset: AssetId(0),
                    amount: Money::from_int(self.rng.gen_range(1..5_000)),
                }
            }
            950..=969 => Command::CancelAll {
                account: self.account(),
                instrument: if self.rng.gen_bool(0.5) {
                    Some(inst)
                } else {
                    None
                },
            },
            970..=979 => Command::SetAssetMode {
                account: self.account(),
                mode: [AssetMode::Single, AssetMode::Multi, AssetMode::Unified]
                    [self.rng.gen_range(0..3)],
            },
            _ => Command::Deposit {
                account: self.account(),
                asset: AssetId(self.rng.gen_range(0..5)),
                amount: Money::from_int(self.rng.gen_range(0..50_000)),
            },
        }
    }
}
