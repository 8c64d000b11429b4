//! The engine state and the command handlers.

use crate::indexes::Indexes;
use crate::state::{OrderMeta, State};
use perpcore_book::MatchResult;
use perpcore_risk::{self as risk, Account};
use perpcore_types::*;

/// Insurance fund account of asset `k`: `AccountId(u64::MAX − k)`.
pub(crate) fn fund_account_id(asset: AssetId) -> AccountId {
    AccountId(u64::MAX - asset.0 as u64)
}

/// The deterministic core: the canonical [`State`], the [`Indexes`] derived from it, and
/// scratch space that is empty between commands.
pub struct Engine {
    pub(crate) state: State,
    pub(crate) ix: Indexes,
    pub(crate) tmp: Scratch,
    /// Test and benchmark builds only (feature `reference-paths`): which slower reference
    /// path to run instead of the production one.
    #[cfg(feature = "reference-paths")]
    pub(crate) reference: ReferencePaths,
}

/// Working space of one command; empty (or unused) between commands, so not state.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) scratch: MatchResult,
    /// Set only while a liquidation order of an isolated position executes: its closing
    /// fills keep the released margin with the position instead of paying it to the
    /// wallet (the margin belongs to the liquidation, MARGIN §7).
    pub(crate) holding_isolated: Option<(AccountId, InstrumentId)>,
    /// During an indexed liquidation sweep: positions opened by the sweep itself.
    pub(crate) tick_new_holders: Option<Vec<(InstrumentId, AccountId)>>,
    /// Working prices that moved with conditional orders waiting on them
    /// (`conditional.rs`); emptied by `run_triggers`.
    pub(crate) moved: Vec<(InstrumentId, WorkingPrice)>,
    /// How far into this command's events the accounts they name are marked dirty
    /// (`Engine::mark_dirty`).
    pub(crate) dirty_from: usize,
}

/// The reference paths the optimised ones are tested against. Not compiled into the
/// production engine.
#[cfg(feature = "reference-paths")]
#[derive(Default)]
pub(crate) struct ReferencePaths {
    /// Check every holder on every tick instead of consulting the liquidation index.
    pub(crate) full_scan: bool,
    /// Amend by `prepare_order` + cancel + submit instead of `check_amend` + requeue.
    pub(crate) amend_by_resubmit: bool,
    /// Stop the liquidation process at MARGIN §7 step 3, as before auto-deleveraging: the
    /// fund takes every position over whatever its balance, and a fund whose balance went
    /// negative is not deleveraged (its deficit covers still stop at its balance). The
    /// naive reference model, which implements steps 1–3, is compared with this engine.
    pub(crate) no_auto_deleveraging: bool,
}

pub(crate) type Res = Result<(), RejectReason>;

impl Engine {
    pub fn new(config: Config) -> Engine {
        let assets = config.assets.len();
        let state = State::new(config);
        let ix = Indexes::rebuild(&state).expect("the empty state of a configuration");
        let mut e = Engine {
            state,
            ix,
            tmp: Scratch::default(),
            #[cfg(feature = "reference-paths")]
            reference: ReferencePaths::default(),
        };
        for k in 0..assets {
            let id = fund_account_id(AssetId::at(k));
            let mut a = Account::new(id, None, assets);
            a.system = true;
            e.insert_account(a);
        }
        e
    }

    /// The canonical state (what is hashed and snapshotted).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The derived indexes, for tests that compare them with [`Indexes::rebuild`].
    pub fn indexes(&self) -> &Indexes {
        &self.ix
    }

    pub fn config(&self) -> &Config {
        &self.state.config
    }
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }
    pub fn last_ts_ns(&self) -> u64 {
        self.state.last_ts_ns
    }
    pub fn mark(&self, i: InstrumentId) -> Option<Price> {
        self.state.marks.get(i.0 as usize).copied().flatten()
    }
    /// The instrument's market data: index price, funding rate and next funding time, the
    /// reference prices.
    pub fn market(&self, i: InstrumentId) -> Option<&crate::state::MarketData> {
        self.state.market.get(i.0 as usize)
    }
    pub fn book(&self, i: InstrumentId) -> Option<&perpcore_book::Book> {
        self.state.books.get(i.0 as usize)
    }
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.ix
            .account_index
            .get(id)
            .map(|k| &self.state.accounts[k as usize])
    }
    pub fn accounts(&self) -> &[Account] {
        &self.state.accounts
    }
    pub fn order(&self, id: OrderId) -> Option<&OrderMeta> {
        self.state.orders.get(&id)
    }
    /// The waiting conditional orders, in ascending id.
    pub fn conditionals(&self) -> impl Iterator<Item = &crate::state::Conditional> + '_ {
        self.state.conditionals.values()
    }
    pub fn insurance_fund(&self, asset: AssetId) -> Money {
        self.account(fund_account_id(asset))
            .map(|a| a.wallets[asset.0 as usize])
            .unwrap_or_default()
    }
    /// The conversion desk's balance of `asset` (auto-exchanges; may be negative).
    pub fn conversion_desk(&self, asset: AssetId) -> Money {
        self.state.conversion_desk[asset.0 as usize]
    }

    pub fn fee_income(&self, asset: AssetId) -> Money {
        self.state.fee_income[asset.0 as usize]
    }

    pub(crate) fn insert_account(&mut self, a: Account) {
        let k = u32::try_from(self.state.accounts.len()).expect("too many accounts");
        let prev = self.ix.account_index.insert(a.id, k);
        assert!(prev.is_none(), "account {} inserted twice", a.id);
        self.state.accounts.push(a);
    }

    pub(crate) fn idx(&self, id: AccountId) -> Option<usize> {
        self.ix.account_index.get(id).map(|k| k as usize)
    }

    /// A user-addressable account (insurance funds are not).
    pub(crate) fn user_idx(&self, id: AccountId) -> Result<usize, RejectReason> {
        match self.idx(id) {
            Some(k) if !self.state.accounts[k].system => Ok(k),
            _ => Err(RejectReason::UnknownAccount),
        }
    }

    pub(crate) fn spec(&self, i: InstrumentId) -> Result<&InstrumentSpec, RejectReason> {
        self.state
            .config
            .instrument(i)
            .ok_or(RejectReason::UnknownInstrument)
    }

    pub(crate) fn check_asset(&self, k: AssetId) -> Res {
        self.state
            .config
            .asset(k)
            .map(|_| ())
            .ok_or(RejectReason::UnknownAsset)
    }

    /// Account `k` with the prices a risk decision reads.
    pub(crate) fn view(&self, k: usize) -> risk::AccountView<'_> {
        risk::AccountView {
            account: &self.state.accounts[k],
            config: &self.state.config,
            marks: &self.state.marks,
            usd: self.usd_prices(),
        }
    }

    pub(crate) fn pool_of(&self, k: usize, asset: AssetId) -> risk::Pool {
        risk::pool(
            &self.state.accounts[k],
            asset,
            &self.state.config.instruments,
            &self.state.marks,
        )
    }

    /// Apply one sequenced command. Events are appended to `out`.
    pub fn apply(&mut self, env: &Envelope, out: &mut Vec<Event>) {
        self.apply_command(env.seq, env.ts_ns, &env.command, out);
    }

    /// `apply` for a command the caller already holds (the sequencer), without building
    /// an envelope around it.
    pub fn apply_command(&mut self, seq: u64, ts_ns: u64, command: &Command, out: &mut Vec<Event>) {
        assert!(
            seq > self.state.last_seq,
            "sequence numbers must increase: {} after {}",
            seq,
            self.state.last_seq
        );
        assert!(
            ts_ns >= self.state.last_ts_ns,
            "timestamps must not go back"
        );
        self.state.last_seq = seq;
        self.state.last_ts_ns = ts_ns;
        self.tmp.dirty_from = out.len();
        // Time passing is itself an input: hour boundaries charge interest first.
        self.accrue_interest(ts_ns, out);
        // So do funding times (MARGIN §9). A rate announced for the funding time being
        // settled is that time's final rate: it settles at it.
        if let Command::SetFundingRate {
            instrument,
            rate,
            next_funding_ns,
        } = command
        {
            self.final_funding_rate(*instrument, *rate, *next_funding_ns, ts_ns);
        }
        self.advance_time(ts_ns, out);
        self.run_triggers(out);
        let start = out.len();
        let r = self.dispatch(command, out);
        if let Err(reason) = r {
            assert_eq!(out.len(), start, "a rejected command emitted events");
            out.push(Event::rejected(reason));
        }
        self.run_triggers(out);
        // Every account an event names may have a new cushion: re-band it before the
        // index is next used (a mark tick), not now — most commands are not ticks.
        // (A set, so bounded by the number of distinct accounts however long between
        // ticks.)
        self.mark_dirty(out);
    }

    /// Marks dirty every account the events in `out` since the last call name (see
    /// `Scratch::dirty_from`). A mark tick calls it before it consults the liquidation
    /// index: an earlier tick of the same command (a derived mark before and after a
    /// funding time, a funding payment) may have moved cushions by trades.
    pub(crate) fn mark_dirty(&mut self, out: &[Event]) {
        if self.full_scan() {
            return;
        }
        let from = self.tmp.dirty_from.min(out.len());
        for e in &out[from..] {
            event_accounts(e, |a| self.ix.dirty.insert(a));
        }
        self.tmp.dirty_from = out.len();
    }

    /// The command's handler: `Ok` when it applied (its events in `out`), the reason
    /// when it was refused (nothing changed, no event).
    fn dispatch(&mut self, command: &Command, out: &mut Vec<Event>) -> Res {
        match command {
            Command::CreateAccount { account, parent } => {
                self.create_account(*account, *parent, out)
            }
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(*account, *asset, *amount, out),
            Command::Withdraw {
                account,
                asset,
                amount,
            } => self.withdraw(*account, *asset, *amount, out),
            Command::Transfer {
                from,
                to,
                asset,
                amount,
            } => self.transfer(*from, *to, *asset, *amount, out),
            Command::SetLeverage {
                account,
                instrument,
                leverage,
            } => self.set_leverage(*account, *instrument, *leverage, out),
            Command::SetMarginMode {
                account,
                instrument,
                mode,
            } => self.set_margin_mode(*account, *instrument, *mode, out),
            Command::AdjustIsolatedMargin {
                account,
                instrument,
                delta,
                position_side,
            } => self.adjust_isolated_margin(*account, (*instrument, *position_side), *delta, out),
            Command::PlaceOrder(o) => self.place_order(o, out),
            Command::CancelOrder { account, order_id } => {
                self.cancel_order(*account, *order_id, out)
            }
            Command::CancelAll {
                account,
                instrument,
            } => self.cancel_all(*account, *instrument, out),
            Command::AmendOrder {
                account,
                order_id,
                price,
                qty,
            } => self.amend_order(*account, *order_id, *price, *qty, out),
            Command::SetMarkPrice { instrument, price } => {
                self.set_mark_price(*instrument, *price, out)
            }
            Command::SetAssetIndex {
                asset,
                quote,
                price,
            } => self.set_asset_index(*asset, *quote, *price, out),
            Command::SetAssetMode { account, mode } => self.set_asset_mode(*account, *mode, out),
            Command::SetIndexPrice { instrument, price } => {
                self.set_index_price(*instrument, *price, out)
            }
            Command::SetFundingRate {
                instrument,
                rate,
                next_funding_ns,
            } => self.set_funding_rate(*instrument, *rate, *next_funding_ns, out),
            Command::SetReferencePrices {
                instrument,
                best_bid,
                best_ask,
                last_trade,
            } => self.set_reference_prices(*instrument, *best_bid, *best_ask, *last_trade, out),
            Command::PlaceConditional(o) => self.place_conditional(o, out),
            Command::SetPositionMode { account, mode } => {
                self.set_position_mode(*account, *mode, out)
            }
        }
    }

    /// The liquidation process without its step 4 (auto-deleveraging): the engine the
    /// naive reference model is compared with. Not the production behaviour: a fund may
    /// then carry positions it cannot afford.
    #[cfg(feature = "reference-paths")]
    pub fn without_auto_deleveraging(mut self) -> Engine {
        self.reference.no_auto_deleveraging = true;
        self
    }

    /// Whether MARGIN §7 step 4 runs (always, outside test builds).
    pub(crate) fn auto_deleveraging(&self) -> bool {
        #[cfg(feature = "reference-paths")]
        {
            !self.reference.no_auto_deleveraging
        }
        #[cfg(not(feature = "reference-paths"))]
        {
            true
        }
    }

    /// Check every holder on every mark tick (no liquidation index). Same results, more
    /// work: the reference the index is tested against, and a benchmark baseline.
    #[cfg(feature = "reference-paths")]
    pub fn with_full_scan(mut self) -> Engine {
        self.reference.full_scan = true;
        self
    }

    /// Amend every order by cancel + submit, never in place. Same results, more work:
    /// the reference the in-place path is tested against.
    #[cfg(feature = "reference-paths")]
    pub fn with_amend_by_resubmit(mut self) -> Engine {
        self.reference.amend_by_resubmit = true;
        self
    }

    /// Flushes the dirty set and compares the live indexes with `Indexes::rebuild` of the
    /// state (see `Indexes::compare`). Flushing only re-bands early what the next tick
    /// would re-band at the same marks, so it changes no later result.
    #[cfg(feature = "reference-paths")]
    pub fn check_indexes(&mut self) -> Result<(), String> {
        self.flush_dirty();
        let rebuilt = Indexes::rebuild(&self.state).map_err(|e| e.to_string())?;
        self.ix.compare(&rebuilt, &self.state)
    }

    /// Whether this engine runs the full-scan reference path (never in production).
    #[inline(always)]
    pub(crate) fn full_scan(&self) -> bool {
        #[cfg(feature = "reference-paths")]
        return self.reference.full_scan;
        #[cfg(not(feature = "reference-paths"))]
        false
    }

    /// Whether this engine amends in place (always in production).
    #[inline(always)]
    pub(crate) fn amend_in_place(&self) -> bool {
        #[cfg(feature = "reference-paths")]
        return !self.reference.amend_by_resubmit;
        #[cfg(not(feature = "reference-paths"))]
        true
    }
}

/// The accounts whose cushion (margin balance − maintenance margin) an event may have
/// changed. Order events are left out: an order changes no cushion.
pub(crate) fn event_accounts(e: &Event, mut out: impl FnMut(AccountId)) {
    match e {
        Event::Trade {
            taker_account,
            maker_account,
            ..
        } => {
            out(*taker_account);
            out(*maker_account);
        }
        Event::Transferred { from, to, .. } => {
            out(*from);
            out(*to);
        }
        Event::AutoDeleveraged {
            account,
            liquidated,
            ..
        } => {
            out(*account);
            out(*liquidated);
        }
        Event::AccountCreated { account, .. }
        | Event::Deposited { account, .. }
        | Event::Withdrawn { account, .. }
        | Event::LeverageSet { account, .. }
        | Event::MarginModeSet { account, .. }
        | Event::IsolatedMarginAdjusted { account, .. }
        | Event::LiquidationTriggered { account, .. }
        | Event::PositionTakenOver { account, .. }
        | Event::DeficitCovered { account, .. }
        | Event::AssetModeSet { account, .. }
        | Event::InterestCharged { account, .. }
        | Event::AutoExchanged { account, .. }
        | Event::FundingPaid { account, .. } => out(*account),
        Event::Rejected { .. }
        | Event::OrderAccepted { .. }
        | Event::OrderCanceled { .. }
        | Event::OrderRested { .. }
        | Event::OrderAmended { .. }
        | Event::OrderReduced { .. }
        | Event::MarkPriceSet { .. }
        | Event::IndexPriceSet { .. }
        | Event::AssetIndexSet { .. }
        | Event::FundingRateSet { .. }
        | Event::FundingSettled { .. }
        | Event::ConditionalPlaced { .. }
        | Event::ConditionalTriggered { .. }
        | Event::ConditionalRejected { .. }
        | Event::PositionModeSet { .. }
        | Event::ReferencePricesSet { .. } => {}
    }
}
