//! perpcore-flow: a seeded order-flow generator that trades around the recorded market,
//! interleaved with the recorded ticks by exchange time. It consumes the market-data
//! items of `perpcore-feed` and adds orders; the feed crate itself only turns recorded or
//! live market data into commands.
//!
//! At the first tick it opens `accounts` accounts (a share of them makers, the rest
//! takers; a share isolated, the rest cross), deposits into every settlement asset of the
//! linear instruments and sets a leverage per instrument (makers 5–20x, takers 5–100x,
//! weighted to the high end, never above the instrument's maximum). Then, at
//! `actions_per_sec` of exchange time on average, it emits one action on a linear
//! instrument that has reference prices and a mark:
//!
//! - makers (70% of actions): GTC or post-only quotes 0–0.25% behind the reference best
//!   bid/ask, amends to a new price, cancels (each maker keeps at most 24 quotes it
//!   believes live; the oldest is cancelled first);
//! - takers (30%): IOC limits crossing the reference by up to 0.05% (one in five by up
//!   to 0.5%: a sweep), market orders, close-position orders, and occasional top-up
//!   deposits. Sizes are 1–10% of deposit × leverage, so high-leverage takers pay the
//!   spread and fees, accumulate positions up to their margin and sit close to
//!   liquidation; some are liquidated as the mark moves.
//!
//! The generator is open loop: it never sees the engine's events, so some commands are
//! rejected (a cancel of an order that already filled, a close with no position, an order
//! over the margin) — as in a real gateway's traffic.
//!
//! **Marks.** Liquidation needs a mark. The 2024 captures have no `markPriceUpdate`
//! stream, so for an instrument with no recorded mark in the last 3 s the generator emits
//! a synthetic `SetMarkPrice` at the reference mid (`(bid + ask) / 2`, rounded down to
//! 10^-8) once per `synthetic_mark_interval_ns` (1 s, the cadence of Binance's mark
//! stream), tagged [`Origin::SyntheticMark`].
//!
//! **Bounds.** The flow lives inside the recording's real span: across a gap between
//! consecutive ticks longer than `max_tick_gap_ns` (default 60 s) nothing is generated,
//! and the schedule (actions and synthetic marks) resumes at the tick after the gap
//! (counted in [`FlowStats::gaps_skipped`]); a bogus far-future tick that the reader's
//! jump rule let through (see [`perpcore_feed::reader`]) cannot make the flow fill the years in
//! between. And at most `max_commands` commands are generated (default 5,000,000, setup
//! and synthetic marks included): when the budget is reached generation stops, the
//! ticks go on, and [`FlowStats::budget_reached_ns`] and [`FlowStats::over_budget`] say
//! when and how much was left out.
//!
//! Owns the accounts' roles and parameters, the order ids it assigns (counting up from 1)
//! and the schedule. Must never: trade an inverse instrument, use a float, read a clock
//! (times come from the ticks), or depend on anything but the seed and the ticks (same
//! seed and files ⇒ same commands).

use perpcore_feed::{FeedItem, Origin};
use perpcore_types::{
    AccountId, AssetId, Command, Config, ContractKind, InstrumentId, InstrumentSpec, MarginMode,
    Money, NewOrder, OrderId, OrderType, Price, PriceTicks, QtyLots, Rounding, Side, StpMode,
    TimeInForce, MONEY_SCALE,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

/// Generator settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowOptions {
    pub seed: u64,
    /// Accounts opened at the first tick.
    pub accounts: u32,
    /// Average actions per second of exchange time (0: only the setup).
    pub actions_per_sec: u32,
    /// Percent of accounts that are makers.
    pub maker_pct: u32,
    /// Percent of accounts in isolated margin mode.
    pub isolated_pct: u32,
    /// Synthetic mark cadence for instruments without a recorded mark (0: never).
    pub synthetic_mark_interval_ns: u64,
    /// Id of the first account.
    pub first_account_id: u64,
    /// Most commands generated (setup, actions and synthetic marks); see the module docs.
    pub max_commands: u64,
    /// Longest gap between consecutive ticks the flow trades through; see the module docs.
    pub max_tick_gap_ns: u64,
}

/// Default [`FlowOptions::max_commands`].
pub const DEFAULT_MAX_FLOW_COMMANDS: u64 = 5_000_000;
/// Default [`FlowOptions::max_tick_gap_ns`]: 60 s.
pub const DEFAULT_MAX_TICK_GAP_NS: u64 = 60_000_000_000;

impl Default for FlowOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            accounts: 200,
            actions_per_sec: 1000,
            maker_pct: 20,
            isolated_pct: 30,
            synthetic_mark_interval_ns: 1_000_000_000,
            first_account_id: 1_000_000,
            max_commands: DEFAULT_MAX_FLOW_COMMANDS,
            max_tick_gap_ns: DEFAULT_MAX_TICK_GAP_NS,
        }
    }
}

/// How long a recorded mark suppresses synthetic ones.
const RECORDED_MARK_FRESH_NS: u64 = 3_000_000_000;
/// Percent of actions that are a maker's.
const MAKER_ACTION_PCT: u32 = 70;
/// Quotes a maker believes live, at most.
const MAX_LIVE_QUOTES: usize = 24;

#[derive(Clone, Debug)]
struct Acct {
    id: AccountId,
    maker: bool,
    /// Whole units of the settlement asset deposited at setup.
    deposit_units: i64,
    /// Leverage per market (same order as `Flow::markets`).
    leverage: Vec<u32>,
    live: VecDeque<(OrderId, usize, Side)>,
}

#[derive(Clone, Debug)]
struct Market {
    spec: InstrumentSpec,
    bid: Option<Price>,
    ask: Option<Price>,
    mark: Option<Price>,
    last_recorded_mark_ns: Option<u64>,
    next_synthetic_ns: u64,
}

impl Market {
    fn ready(&self) -> bool {
        self.bid.is_some() && self.ask.is_some() && self.mark.is_some()
    }
    fn mid(&self) -> Option<Price> {
        let (b, a) = (self.bid?, self.ask?);
        Some(Price(b.0 / 2 + a.0 / 2 + (b.0 % 2 + a.0 % 2) / 2))
    }
}

/// Counters of generated commands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub commands: BTreeMap<&'static str, u64>,
    pub synthetic_marks: u64,
    pub actions_skipped_no_market: u64,
    /// Reference or mark prices the engine would refuse (not positive, or above
    /// `MAX_PRICE`): not quoted around (quoting near `i64::MAX` overflowed).
    pub prices_out_of_range: u64,
    /// Commands generated (the sum of `commands`), at most `max_commands`.
    pub generated: u64,
    /// Exchange time at which the command budget stopped generation, if it did.
    pub budget_reached_ns: Option<u64>,
    /// Commands refused by the budget plus the actions that fell due after it (not
    /// generated).
    pub over_budget: u64,
    /// Gaps between ticks longer than `max_tick_gap_ns`, not traded through.
    pub gaps_skipped: u64,
    /// Exchange time in those gaps, ns.
    pub gap_ns_skipped: u64,
}

/// Wraps a tick stream and interleaves the generated flow by time.
pub struct Flow<I: Iterator<Item = FeedItem>> {
    inner: I,
    opts: FlowOptions,
    rng: ChaCha8Rng,
    markets: Vec<Market>,
    /// InstrumentId → index into `markets` (linear instruments only).
    market_of: Vec<Option<usize>>,
    settle_assets: Vec<AssetId>,
    accounts: Vec<Acct>,
    makers: Vec<usize>,
    takers: Vec<usize>,
    started: bool,
    next_action_ns: u64,
    last_ns: u64,
    next_order_id: u64,
    peeked: Option<FeedItem>,
    pending: VecDeque<FeedItem>,
    stats: FlowStats,
}

impl<I: Iterator<Item = FeedItem>> std::fmt::Debug for Flow<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("opts", &self.opts)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<I: Iterator<Item = FeedItem>> Flow<I> {
    pub fn new(inner: I, config: &Config, opts: FlowOptions) -> Self {
        let mut market_of = vec![None; config.instruments.len()];
        let mut markets = Vec::new();
        let mut settle_assets: Vec<AssetId> = Vec::new();
        for spec in &config.instruments {
            if spec.kind != ContractKind::Linear {
                continue;
            }
            market_of[spec.id.0 as usize] = Some(markets.len());
            if !settle_assets.contains(&spec.settle_asset) {
                settle_assets.push(spec.settle_asset);
            }
            markets.push(Market {
                spec: spec.clone(),
                bid: None,
                ask: None,
                mark: None,
                last_recorded_mark_ns: None,
                next_synthetic_ns: 0,
            });
        }
        Flow {
            inner,
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            opts,
            markets,
            market_of,
            settle_assets,
            accounts: Vec::new(),
            makers: Vec::new(),
            takers: Vec::new(),
            started: false,
            next_action_ns: u64::MAX,
            last_ns: 0,
            next_order_id: 1,
            peeked: None,
            pending: VecDeque::new(),
            stats: FlowStats::default(),
        }
    }

    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }
    /// The wrapped tick stream (for its statistics).
    pub fn inner(&self) -> &I {
        &self.inner
    }

    fn emit(&mut self, t: u64, origin: Origin, command: Command) {
        if self.stats.generated >= self.opts.max_commands {
            self.stats.budget_reached_ns.get_or_insert(t);
            self.stats.over_budget += 1;
            return;
        }
        self.stats.generated += 1;
        *self.stats.commands.entry(command.kind()).or_default() += 1;
        self.pending.push_back(FeedItem {
            exchange_ns: t,
            origin,
            command,
        });
    }

    fn gap_ns(&mut self) -> u64 {
        if self.opts.actions_per_sec == 0 {
            return u64::MAX;
        }
        let mean = (1_000_000_000 / u64::from(self.opts.actions_per_sec)).max(1);
        self.rng.gen_range(1..=mean.saturating_mul(2))
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.gen_range(0..from.len())]
    }

    fn setup(&mut self, t: u64) {
        const MAKER_LEV: [u32; 3] = [5, 10, 20];
        const TAKER_LEV: [u32; 8] = [5, 10, 20, 25, 50, 75, 100, 100];
        for n in 0..self.opts.accounts {
            let id = AccountId(self.opts.first_account_id.saturating_add(u64::from(n)));
            let maker = self.rng.gen_range(0..100) < self.opts.maker_pct;
            let isolated = self.rng.gen_range(0..100) < self.opts.isolated_pct;
            let deposit_units: i64 = if maker {
                self.rng.gen_range(250_000..=2_000_000)
            } else {
                self.rng.gen_range(200..=20_000)
            };
            self.emit(
                t,
                Origin::Flow,
                Command::CreateAccount {
                    account: id,
                    parent: None,
                },
            );
            for k in 0..self.settle_assets.len() {
                let asset = self.settle_assets[k];
                self.emit(
                    t,
                    Origin::Flow,
                    Command::Deposit {
                        account: id,
                        asset,
                        amount: Money::from_int(deposit_units),
                    },
                );
            }
            let mut leverage = Vec::with_capacity(self.markets.len());
            for m in 0..self.markets.len() {
                let want = if maker {
                    self.pick(&MAKER_LEV)
                } else {
                    self.pick(&TAKER_LEV)
                };
                let instrument = self.markets[m].spec.id;
                let lev = want.min(self.markets[m].spec.max_leverage).max(1);
                if isolated {
                    self.emit(
                        t,
                        Origin::Flow,
                        Command::SetMarginMode {
                            account: id,
                            instrument,
                            mode: MarginMode::Isolated,
                        },
                    );
                }
                self.emit(
                    t,
                    Origin::Flow,
                    Command::SetLeverage {
                        account: id,
                        instrument,
                        leverage: lev,
                    },
                );
                leverage.push(lev);
            }
            let k = self.accounts.len();
            if maker {
                self.makers.push(k);
            } else {
                self.takers.push(k);
            }
            self.accounts.push(Acct {
                id,
                maker,
                deposit_units,
                leverage,
                live: VecDeque::new(),
            });
        }
    }

    /// Updates the generator's view of the market from a passing tick.
    fn observe(&mut self, item: &FeedItem) {
        match item.command {
            Command::SetReferencePrices {
                instrument,
                best_bid,
                best_ask,
                ..
            } => {
                if [best_bid, best_ask].iter().flatten().any(|p| !usable(*p)) {
                    self.stats.prices_out_of_range += 1;
                    return;
                }
                if let Some(m) = self.market_index(instrument) {
                    let mk = &mut self.markets[m];
                    mk.bid = best_bid.or(mk.bid);
                    mk.ask = best_ask.or(mk.ask);
                }
            }
            Command::SetMarkPrice { instrument, price } => {
                if !usable(price) {
                    self.stats.prices_out_of_range += 1;
                    return;
                }
                if let Some(m) = self.market_index(instrument) {
                    let mk = &mut self.markets[m];
                    mk.mark = Some(price);
                    if item.origin == Origin::Feed {
                        mk.last_recorded_mark_ns = Some(item.exchange_ns);
                    }
                }
            }
            _ => {}
        }
    }

    fn market_index(&self, i: InstrumentId) -> Option<usize> {
        self.market_of.get(i.0 as usize).copied().flatten()
    }

    fn over_budget(&self) -> bool {
        self.stats.generated >= self.opts.max_commands
    }

    /// A tick `t` after a gap longer than `max_tick_gap_ns`: nothing is generated inside
    /// the gap; the schedule resumes from `t`.
    fn skip_gap(&mut self, t: u64) {
        let gap = t.saturating_sub(self.last_ns);
        if gap <= self.opts.max_tick_gap_ns {
            return;
        }
        self.stats.gaps_skipped += 1;
        self.stats.gap_ns_skipped = self.stats.gap_ns_skipped.saturating_add(gap);
        if self.next_action_ns != u64::MAX && self.next_action_ns < t {
            self.next_action_ns = t.saturating_add(self.gap_ns());
        }
        for m in &mut self.markets {
            m.next_synthetic_ns = m.next_synthetic_ns.max(t);
        }
    }

    /// The next synthetic mark due: (time, market).
    fn next_synthetic(&self) -> Option<(u64, usize)> {
        if self.opts.synthetic_mark_interval_ns == 0 || self.over_budget() {
            return None;
        }
        self.markets
            .iter()
            .enumerate()
            .filter(|(_, m)| m.bid.is_some() && m.ask.is_some())
            .map(|(k, m)| (m.next_synthetic_ns, k))
            .min()
    }

    fn synthetic_mark(&mut self, t: u64, k: usize) {
        let interval = self.opts.synthetic_mark_interval_ns;
        let m = &mut self.markets[k];
        m.next_synthetic_ns = t.saturating_add(interval);
        let fresh = m
            .last_recorded_mark_ns
            .is_some_and(|r| t.saturating_sub(r) < RECORDED_MARK_FRESH_NS);
        if fresh {
            return;
        }
        let Some(mid) = m.mid() else { return };
        m.mark = Some(mid);
        let instrument = m.spec.id;
        self.stats.synthetic_marks += 1;
        self.emit(
            t,
            Origin::SyntheticMark,
            Command::SetMarkPrice {
                instrument,
                price: mid,
            },
        );
    }

    fn new_order_id(&mut self) -> OrderId {
        let id = OrderId(self.next_order_id);
        self.next_order_id += 1;
        id
    }

    /// Lots worth about `notional` whole quote units at `price` (at least the minimum,
    /// at most the maximum).
    fn lots_for(spec: &InstrumentSpec, notional_units: i64, price: Price) -> QtyLots {
        let lot_value = spec.linear_value(QtyLots(1), price).raw();
        let want = i128::from(notional_units) * MONEY_SCALE;
        let lots = if lot_value > 0 { want / lot_value } else { 0 };
        let lots = i64::try_from(lots).unwrap_or(i64::MAX);
        QtyLots(lots.clamp(spec.min_qty.0.max(1), spec.max_qty.0.max(1)))
    }

    fn act(&mut self, t: u64) {
        let ready: Vec<usize> = (0..self.markets.len())
            .filter(|&k| self.markets[k].ready())
            .collect();
        if ready.is_empty() || self.accounts.is_empty() {
            self.stats.actions_skipped_no_market += 1;
            return;
        }
        let m = self.pick(&ready);
        let maker_turn = self.rng.gen_range(0..100) < MAKER_ACTION_PCT;
        let use_makers = matches!(
            (maker_turn, self.makers.is_empty(), self.takers.is_empty()),
            (true, false, _) | (false, _, true)
        );
        let a = if use_makers {
            self.makers[self.rng.gen_range(0..self.makers.len())]
        } else {
            self.takers[self.rng.gen_range(0..self.takers.len())]
        };
        if self.accounts[a].maker {
            self.maker_action(t, a, m);
        } else {
            self.taker_action(t, a, m);
        }
    }

    fn quote_price(&mut self, m: usize, side: Side) -> PriceTicks {
        let mk = &self.markets[m];
        let spec = &mk.spec;
        let (bid, ask) = (mk.bid.unwrap_or_default(), mk.ask.unwrap_or_default());
        // 0.25% of the mid, in ticks.
        let mid = mk.mid().unwrap_or_default();
        let span = spec.ticks_of(Price(mid.0 / 400), Rounding::Floor).0.max(1);
        let off = self.rng.gen_range(0..=span);
        match side {
            Side::Buy => PriceTicks((spec.ticks_of(bid, Rounding::Floor).0 - off).max(1)),
            Side::Sell => PriceTicks(spec.ticks_of(ask, Rounding::Ceil).0 + off),
        }
    }

    fn maker_action(&mut self, t: u64, a: usize, m: usize) {
        let account = self.accounts[a].id;
        if self.accounts[a].live.len() >= MAX_LIVE_QUOTES {
            if let Some((order_id, _, _)) = self.accounts[a].live.pop_front() {
                self.emit(t, Origin::Flow, Command::CancelOrder { account, order_id });
            }
            return;
        }
        let r = self.rng.gen_range(0..100);
        let n_live = self.accounts[a].live.len();
        if r < 15 && n_live > 0 {
            let k = self.rng.gen_range(0..n_live);
            let (order_id, om, side) = self.accounts[a].live[k];
            let price = self.quote_price(om, side);
            self.emit(
                t,
                Origin::Flow,
                Command::AmendOrder {
                    account,
                    order_id,
                    price: Some(price),
                    qty: None,
                },
            );
            return;
        }
        if r < 25 && n_live > 0 {
            let k = self.rng.gen_range(0..n_live);
            if let Some((order_id, _, _)) = self.accounts[a].live.remove(k) {
                self.emit(t, Origin::Flow, Command::CancelOrder { account, order_id });
            }
            return;
        }
        let side = if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = self.quote_price(m, side);
        let spec = &self.markets[m].spec;
        let cap = Self::lots_for(spec, 50_000, spec.price_of(price));
        let qty = QtyLots(self.rng.gen_range(spec.min_qty.0.max(1)..=cap.0.max(1)));
        let tif = if self.rng.gen_range(0..100) < 80 {
            TimeInForce::Gtc
        } else {
            TimeInForce::PostOnly
        };
        let order_id = self.new_order_id();
        let instrument = self.markets[m].spec.id;
        self.accounts[a].live.push_back((order_id, m, side));
        self.emit(
            t,
            Origin::Flow,
            Command::PlaceOrder(NewOrder {
                account,
                instrument,
                order_id,
                side,
                order_type: OrderType::Limit,
                tif,
                price,
                qty,
                reduce_only: false,
                close_position: false,
                stp: StpMode::ExpireTaker,
            }),
        );
    }

    fn taker_action(&mut self, t: u64, a: usize, m: usize) {
        let account = self.accounts[a].id;
        let r = self.rng.gen_range(0..100);
        if r < 3 {
            let Some(&asset) = self
                .settle_assets
                .get(self.rng.gen_range(0..self.settle_assets.len().max(1)))
            else {
                return;
            };
            let units: i64 = self.rng.gen_range(500..=5_000);
            self.emit(
                t,
                Origin::Flow,
                Command::Deposit {
                    account,
                    asset,
                    amount: Money::from_int(units),
                },
            );
            return;
        }
        let side = if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let (spec, bid, ask, mid) = {
            let mk = &self.markets[m];
            (
                mk.spec.clone(),
                mk.bid.unwrap_or_default(),
                mk.ask.unwrap_or_default(),
                mk.mid().unwrap_or_default(),
            )
        };
        let max_units = self.accounts[a]
            .deposit_units
            .saturating_mul(i64::from(self.accounts[a].leverage[m]));
        let order_id = self.new_order_id();
        let instrument = spec.id;
        let mut order = NewOrder {
            account,
            instrument,
            order_id,
            side,
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: PriceTicks(0),
            qty: QtyLots(0),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        };
        if r < 73 {
            // Cross the reference by up to 0.05%, one sweep in five by up to 0.5%.
            let divisor = if self.rng.gen_range(0..5) == 0 {
                200
            } else {
                2000
            };
            let span = spec
                .ticks_of(Price(mid.0 / divisor), Rounding::Floor)
                .0
                .max(1);
            let depth = self.rng.gen_range(0..=span);
            order.order_type = OrderType::Limit;
            order.price = match side {
                Side::Buy => PriceTicks(spec.ticks_of(ask, Rounding::Ceil).0 + depth),
                Side::Sell => PriceTicks((spec.ticks_of(bid, Rounding::Floor).0 - depth).max(1)),
            };
            let frac: i64 = self.rng.gen_range(1..=10);
            order.qty = Self::lots_for(&spec, max_units / 100 * frac, mid);
        } else if r < 88 {
            let frac: i64 = self.rng.gen_range(1..=5);
            order.qty = Self::lots_for(&spec, max_units / 100 * frac, mid);
        } else {
            order.close_position = true;
            order.reduce_only = true;
        }
        self.emit(t, Origin::Flow, Command::PlaceOrder(order));
    }
}

impl<I: Iterator<Item = FeedItem>> Iterator for Flow<I> {
    type Item = FeedItem;

    fn next(&mut self) -> Option<FeedItem> {
        loop {
            if let Some(x) = self.pending.pop_front() {
                self.last_ns = self.last_ns.max(x.exchange_ns);
                return Some(x);
            }
            // The flow lives inside the recording: it ends with the last tick.
            let item = match self.peeked.take() {
                Some(item) => item,
                None => {
                    let item = self.inner.next()?;
                    if self.started {
                        self.skip_gap(item.exchange_ns);
                    }
                    item
                }
            };
            let t = item.exchange_ns;
            if !self.started {
                self.started = true;
                self.last_ns = t;
                self.setup(t);
                self.next_action_ns = t.saturating_add(self.gap_ns());
                self.peeked = Some(item);
                continue;
            }
            // u64::MAX means "never" (no actions, or a schedule that ran off the end).
            let action_due = self.next_action_ns <= t && self.next_action_ns != u64::MAX;
            let synthetic_due = self
                .next_synthetic()
                .filter(|(at, _)| *at <= t && *at != u64::MAX);
            match (action_due, synthetic_due) {
                (true, Some((at, k))) if at < self.next_action_ns => {
                    self.synthetic_mark(at.max(self.last_ns), k)
                }
                (true, _) => {
                    let at = self.next_action_ns.max(self.last_ns);
                    if self.over_budget() {
                        self.stats.budget_reached_ns.get_or_insert(at);
                        self.stats.over_budget += 1;
                    } else {
                        self.act(at);
                    }
                    self.next_action_ns = self.next_action_ns.saturating_add(self.gap_ns());
                }
                (false, Some((at, k))) => self.synthetic_mark(at.max(self.last_ns), k),
                (false, None) => {
                    self.observe(&item);
                    self.last_ns = self.last_ns.max(t);
                    return Some(item);
                }
            }
            self.peeked = Some(item);
        }
    }
}

/// A price the engine accepts as a mark or reference (positive, at most `MAX_PRICE`), so
/// that quotes around it stay far inside `i64`.
fn usable(p: Price) -> bool {
    p.0 > 0 && p <= perpcore_types::MAX_PRICE
}
