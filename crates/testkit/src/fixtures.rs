//! Shared fixtures that tests and benches used to retype: a BTCUSDT-like linear
//! perpetual, its brackets, and (feature `engine`) an engine harness that numbers the
//! commands, checks every invariant after each one and funds accounts.
//!
//! Only data and test plumbing: nothing here decides anything the engine decides.

use perpcore_types::*;
use std::path::PathBuf;

/// A GTC limit order for `lots` at `price` on `instrument`: no flags, STP expire-taker.
pub fn limit_order(
    account: u64,
    id: u64,
    instrument: InstrumentId,
    side: Side,
    price: PriceTicks,
    lots: i64,
) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument,
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price,
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

/// The repository's `replay-fixtures/` directory (recorded data, golden files, cases).
pub fn replay_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../replay-fixtures")
}

/// One bracket from whole-currency notionals and decimal text (`mmr` and `cum`).
pub fn bracket(floor: i64, cap: i64, max_leverage: u32, mmr: &str, cum: &str) -> Bracket {
    Bracket {
        notional_floor: Money::from_int(floor),
        notional_cap: Money::from_int(cap),
        max_leverage,
        mmr: Rate::parse(mmr).expect("mmr"),
        cum: Money::parse(cum).expect("cum"),
    }
}

/// Binance's first three BTCUSDT brackets (cum per MARGIN §3: 50,000 × (0.5% − 0.4%) = 50;
/// 250,000 × (1% − 0.5%) + 50 = 1,300), the last one capped at 10^9.
pub fn btcusdt_brackets() -> Vec<Bracket> {
    vec![
        bracket(0, 50_000, 125, "0.004", "0"),
        bracket(50_000, 250_000, 100, "0.005", "50"),
        bracket(250_000, 1_000_000_000, 50, "0.01", "1300"),
    ]
}

/// One bracket for any size: 0–10^9, 125x, mmr 0.4%, cum 0.
pub fn single_bracket() -> Vec<Bracket> {
    vec![bracket(0, 1_000_000_000, 125, "0.004", "0")]
}

/// BTCUSDT as the tests use it: instrument 0, base asset 1 (BTC), quote and settlement
/// asset 0 (USDT), linear; tick 0.1, lot 0.001, 1 to 1,000,000 lots, 125x,
/// [`btcusdt_brackets`], maker 0.02%, taker 0.05%, price band 5%, liquidation fee 1.25%,
/// no fee to close, the default open-order limit. Change what a test needs with struct
/// update syntax (`InstrumentSpec { maker_fee: Rate::ZERO, ..btcusdt() }`).
pub fn btcusdt() -> InstrumentSpec {
    InstrumentSpec {
        id: InstrumentId(0),
        symbol: "BTCUSDT".into(),
        kind: ContractKind::Linear,
        base_asset: AssetId(1),
        quote_asset: AssetId(0),
        settle_asset: AssetId(0),
        tick_size: Price::parse("0.1").expect("tick"),
        lot_size: Qty::parse("0.001").expect("lot"),
        min_qty: QtyLots(1),
        max_qty: QtyLots(1_000_000),
        max_leverage: 125,
        brackets: btcusdt_brackets(),
        maker_fee: Rate::parse("0.0002").expect("fee"),
        taker_fee: Rate::parse("0.0005").expect("fee"),
        price_band: Rate::parse("0.05").expect("band"),
        liquidation_fee: Rate::parse("0.0125").expect("fee"),
        fee_to_close: false,
        max_open_orders: DEFAULT_MAX_OPEN_ORDERS,
        funding_interval_ns: DEFAULT_FUNDING_INTERVAL_NS,
        mark_method: MarkMethod::Recorded,
        funding_method: FundingMethod::Recorded,
        convention: MarginConvention::Binance,
    }
}

#[cfg(feature = "engine")]
pub use harness::TestEngine;

#[cfg(feature = "engine")]
mod harness {
    use perpcore_engine::Engine;
    use perpcore_types::*;

    /// An engine driven the way the engine's integration tests drive it: command `n` is
    /// applied as `seq = n`, at `ts_ns = n` unless a test moved time on with
    /// [`TestEngine::at`] (then at that time), and every invariant is checked after each
    /// one (a violation panics, naming it).
    pub struct TestEngine {
        pub engine: Engine,
        seq: u64,
        ts: u64,
    }

    impl TestEngine {
        pub fn new(config: Config) -> TestEngine {
            TestEngine {
                engine: Engine::new(config),
                seq: 0,
                ts: 0,
            }
        }

        /// Applies `command` at the next sequence number; its events.
        pub fn run(&mut self, command: Command) -> Vec<Event> {
            self.at(self.seq + 1, command)
        }

        /// Applies `command` at the next sequence number and sequenced time `ts_ns` (or
        /// the previous command's, if later); its events.
        pub fn at(&mut self, ts_ns: u64, command: Command) -> Vec<Event> {
            self.seq += 1;
            self.ts = self.ts.max(ts_ns);
            let mut out = Vec::new();
            self.engine.apply(
                &Envelope {
                    seq: self.seq,
                    ts_ns: self.ts,
                    command,
                },
                &mut out,
            );
            if let Err(e) = self.engine.check_invariants() {
                panic!("invariant broken after command {}: {e}", self.seq);
            }
            out
        }

        /// The reject code if `command` ended in a rejection (its last event), else `None`.
        pub fn rejected(&mut self, command: Command) -> Option<u16> {
            match self.run(command).last() {
                Some(Event::Rejected { code, .. }) => Some(*code),
                _ => None,
            }
        }

        /// Opens `account` (no parent) and deposits `amount` of `asset` into it; panics if
        /// either is rejected.
        pub fn create_funded(&mut self, account: u64, asset: AssetId, amount: Money) {
            let account = AccountId(account);
            let created = self.rejected(Command::CreateAccount {
                account,
                parent: None,
            });
            assert_eq!(created, None, "create {account}");
            let deposited = self.rejected(Command::Deposit {
                account,
                asset,
                amount,
            });
            assert_eq!(deposited, None, "deposit into {account}");
        }
    }
}
