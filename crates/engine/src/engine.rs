//! The engine state and the command handlers.

use perpcore_book::{Book, MatchResult, Taker, TakerOutcome, Tif};
use perpcore_risk::{self as risk, Account, Leg};
use perpcore_types::*;
use std::sync::Arc;

/// Order ids from here up are the engine's own (liquidation orders); the gateway's are
/// below.
pub const RESERVED_ORDER_ID_MIN: u64 = 1 << 63;

/// Insurance fund account of asset `k`: `AccountId(u64::MAX − k)`.
pub(crate) fn fund_account_id(asset: AssetId) -> AccountId {
    AccountId(u64::MAX - asset.0 as u64)
}

/// Account id → slot in `Engine::accounts`. Ids below `DENSE_IDS` (exchanges number
/// accounts densely from 1) are found in a vector, others (the insurance funds' ids at
/// the top of the range, sparse client schemes) in a hash map. Lookup only; never
/// iterated, so no order reaches an output.
#[derive(Clone, Debug, Default)]
pub(crate) struct AccountIndex {
    dense: Vec<u32>,
    sparse: LookupMap<AccountId, u32>,
}

/// Ids below this are indexed densely (at most 4 MiB of index).
pub(crate) const DENSE_IDS: u64 = 1 << 20;
const NO_SLOT: u32 = u32::MAX;

/// The dense index of an id below [`DENSE_IDS`] (2^20 fits any `usize` we build for).
#[inline]
fn dense_slot(id: AccountId) -> usize {
    debug_assert!(id.0 < DENSE_IDS);
    usize::try_from(id.0).expect("a dense account id fits a usize")
}

impl AccountIndex {
    #[inline]
    pub(crate) fn get(&self, id: AccountId) -> Option<u32> {
        if id.0 < DENSE_IDS {
            self.dense
                .get(dense_slot(id))
                .copied()
                .filter(|&k| k != NO_SLOT)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    /// Returns the slot `id` had before, if any (then nothing changed).
    pub(crate) fn insert(&mut self, id: AccountId, slot: u32) -> Option<u32> {
        assert!(slot != NO_SLOT, "account slot space exhausted");
        if let Some(prev) = self.get(id) {
            return Some(prev);
        }
        if id.0 < DENSE_IDS {
            let i = dense_slot(id);
            if self.dense.len() <= i {
                self.dense.resize(i + 1, NO_SLOT);
            }
            self.dense[i] = slot;
        } else {
            self.sparse.insert(id, slot);
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }
}

/// Market data per instrument from the feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct MarketData {
    pub index: Option<Price>,
    pub funding_rate: Option<Rate>,
    pub next_funding_ns: u64,
    pub best_bid: Option<Price>,
    pub best_ask: Option<Price>,
    pub last_trade: Option<Price>,
}

/// What the engine keeps per open order beyond the book's view of it.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct OrderMeta {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub reduce_only: bool,
    pub post_only: bool,
    /// Notional of the exposure-increasing part of the open quantity, valued at placement
    /// (a buy at max(limit, mark)); scaled pro rata as the order fills.
    pub margin_notional: Money,
    /// `margin_notional / leverage`, rounded up: the initial margin this order reserves.
    pub reserved: Money,
    /// Notional of the open quantity at the limit price.
    pub open_notional: Money,
}

/// The deterministic core.
pub struct Engine {
    /// Shared so that handlers can hold a spec while mutating the engine, without
    /// cloning it per command.
    pub(crate) config: Arc<Config>,
    /// Accounts in creation order (insurance funds first).
    pub(crate) accounts: Vec<Account>,
    /// Lookup only; never iterated.
    pub(crate) account_index: AccountIndex,
    pub(crate) books: Vec<Book>,
    /// Lookup only; never iterated.
    pub(crate) orders: LookupMap<OrderId, OrderMeta>,
    pub(crate) marks: Vec<Option<Price>>,
    /// Per instrument: market data that is state but drives nothing yet (index, funding,
    /// reference prices), kept so audits and later mark derivation see what the feed said.
    pub(crate) market: Vec<MarketData>,
    /// Per instrument, the limit-price band derived from its mark (recomputed on every
    /// mark update; derived state, so not part of the snapshot).
    pub(crate) bands: Vec<(PriceTicks, PriceTicks)>,
    /// Per instrument: accounts holding a position, sorted by id (liquidation checks walk it).
    pub(crate) holders: Vec<Vec<AccountId>>,
    /// Per asset: fees collected (net of maker rebates).
    pub(crate) fee_income: Vec<Money>,
    /// Per asset: external deposits and withdrawals (conservation reference).
    pub(crate) deposited: Vec<Money>,
    pub(crate) withdrawn: Vec<Money>,
    pub(crate) last_seq: u64,
    pub(crate) last_ts_ns: u64,
    /// Engine-generated order ids (liquidation orders) count up from RESERVED_ORDER_ID_MIN.
    pub(crate) next_internal_order: u64,
    pub(crate) scratch: MatchResult,
    /// Set only while a liquidation order of an isolated position executes: its closing
    /// fills keep the released margin with the position instead of paying it to the
    /// wallet (the margin belongs to the liquidation, MARGIN §7). Never set between
    /// commands, so it is not part of the state.
    pub(crate) holding_isolated: Option<(AccountId, InstrumentId)>,
    /// Per asset: index against USDT and against USD (MARGIN §1).
    pub(crate) index_usdt: Vec<Option<Price>>,
    pub(crate) index_usd: Vec<Option<Price>>,
    /// The asset named "USDT", if configured (derived from the configuration).
    pub(crate) usdt: Option<AssetId>,
    /// Per asset: interest charged on loans.
    pub(crate) interest_income: Vec<Money>,
    /// The hour slot of sequenced time up to which interest has been processed.
    pub(crate) interest_slot: u64,
    /// USD price per asset derived from the indexes (not part of the snapshot).
    pub(crate) usd_cache: Vec<Option<Price>>,
    /// Which accounts a mark tick re-checks (derived; see `liqindex`).
    pub(crate) liq_index: crate::liqindex::LiqIndex,
    /// Check every holder on every tick instead (the reference the index is tested
    /// against; not part of the state).
    pub(crate) full_scan: bool,
    /// Re-check an amend with `check_amend` and re-queue it in place (`Book::requeue_at`)
    /// when it does not cross, instead of `prepare_order` + cancel + submit. Same results
    /// either way; off only in the test that proves it (which then runs the general
    /// path alone, so it compares the fast path against it).
    pub(crate) amend_in_place: bool,
    /// Accounts whose cushion may have changed since they were last banded; re-banded
    /// just before the index is next consulted (derived, not part of the state).
    pub(crate) dirty: crate::liqindex::DirtySet,
    /// During an indexed liquidation sweep: positions opened by the sweep itself.
    pub(crate) tick_new_holders: Option<Vec<(InstrumentId, AccountId)>>,
}

type Res = Result<(), RejectReason>;

/// A checked order, ready for the book.
struct Prepared {
    instrument: InstrumentId,
    taker: Taker,
    meta: OrderMeta,
    unfilled_reason: CancelReason,
}

/// What `Engine::check_amend` decides: where and how much the amended order rests, and
/// what it reserves (`Prepared`'s `taker.limit`, `taker.qty`, `meta.margin_notional`
/// and `meta.reserved`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AmendCheck {
    limit: PriceTicks,
    qty: QtyLots,
    margin_notional: Money,
    reserved: Money,
}

/// A sized and priced order, as the margin check sees it.
#[derive(Clone, Copy)]
struct Terms {
    side: Side,
    qty: QtyLots,
    limit: PriceTicks,
    reduce_only: bool,
}

/// Rule R3 and the size limits: the quantity an order of `side` for `qty` lots may rest
/// or trade with (`close_position`: the whole position), given the account's `leg`.
#[inline]
fn order_qty(
    spec: &InstrumentSpec,
    leg: Option<&Leg>,
    side: Side,
    qty: QtyLots,
    reduce_only: bool,
    close_position: bool,
) -> Result<QtyLots, RejectReason> {
    let position = leg.map(|l| l.qty).unwrap_or_default();
    let mut qty = if close_position { position.abs() } else { qty };
    if reduce_only {
        // Rule R3: never opens or flips; cut to the position.
        if position.is_zero() {
            return Err(RejectReason::ReduceOnlyNoPosition);
        }
        if (position.0 > 0) == (side == Side::Buy) {
            return Err(RejectReason::ReduceOnlyWrongSide);
        }
    }
    if qty.0 <= 0 {
        return Err(RejectReason::QtyNotPositive);
    }
    if !close_position {
        if qty < spec.min_qty {
            return Err(RejectReason::QtyBelowMin);
        }
        if qty > spec.max_qty {
            return Err(RejectReason::QtyAboveMax);
        }
    }
    if reduce_only {
        qty = qty.min(position.abs());
    }
    Ok(qty)
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        let assets = config.assets.len();
        let instruments = config.instruments.len();
        let mut e = Engine {
            accounts: Vec::new(),
            account_index: AccountIndex::default(),
            books: (0..instruments).map(|_| Book::new()).collect(),
            orders: LookupMap::default(),
            marks: vec![None; instruments],
            market: vec![MarketData::default(); instruments],
            bands: vec![(PriceTicks(0), PriceTicks(0)); instruments],
            holders: vec![Vec::new(); instruments],
            fee_income: vec![Money::ZERO; assets],
            deposited: vec![Money::ZERO; assets],
            withdrawn: vec![Money::ZERO; assets],
            last_seq: 0,
            last_ts_ns: 0,
            next_internal_order: RESERVED_ORDER_ID_MIN,
            scratch: MatchResult::new(),
            holding_isolated: None,
            index_usdt: vec![None; assets],
            index_usd: vec![None; assets],
            usdt: config.asset_by_symbol("USDT").map(|a| a.id),
            interest_income: vec![Money::ZERO; assets],
            interest_slot: 0,
            usd_cache: Vec::new(),
            liq_index: crate::liqindex::LiqIndex::new(instruments),
            full_scan: false,
            amend_in_place: true,
            dirty: Default::default(),
            tick_new_holders: None,
            config: Arc::new(config),
        };
        e.refresh_usd_prices();
        for k in 0..assets {
            let id = fund_account_id(AssetId::at(k));
            let mut a = Account::new(id, None, assets);
            a.system = true;
            e.insert_account(a);
        }
        e
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    pub fn last_ts_ns(&self) -> u64 {
        self.last_ts_ns
    }
    pub fn mark(&self, i: InstrumentId) -> Option<Price> {
        self.marks.get(i.0 as usize).copied().flatten()
    }
    pub fn book(&self, i: InstrumentId) -> Option<&Book> {
        self.books.get(i.0 as usize)
    }
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.account_index
            .get(id)
            .map(|k| &self.accounts[k as usize])
    }
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }
    pub fn order(&self, id: OrderId) -> Option<&OrderMeta> {
        self.orders.get(&id)
    }
    pub fn insurance_fund(&self, asset: AssetId) -> Money {
        self.account(fund_account_id(asset))
            .map(|a| a.wallets[asset.0 as usize])
            .unwrap_or_default()
    }
    pub fn fee_income(&self, asset: AssetId) -> Money {
        self.fee_income[asset.0 as usize]
    }

    pub(crate) fn insert_account(&mut self, a: Account) {
        let k = u32::try_from(self.accounts.len()).expect("too many accounts");
        let prev = self.account_index.insert(a.id, k);
        assert!(prev.is_none(), "account {} inserted twice", a.id);
        self.accounts.push(a);
    }

    pub(crate) fn idx(&self, id: AccountId) -> Option<usize> {
        self.account_index.get(id).map(|k| k as usize)
    }

    /// A user-addressable account (insurance funds are not).
    pub(crate) fn user_idx(&self, id: AccountId) -> Result<usize, RejectReason> {
        match self.idx(id) {
            Some(k) if !self.accounts[k].system => Ok(k),
            _ => Err(RejectReason::UnknownAccount),
        }
    }

    fn spec(&self, i: InstrumentId) -> Result<&InstrumentSpec, RejectReason> {
        self.config
            .instrument(i)
            .ok_or(RejectReason::UnknownInstrument)
    }

    fn check_asset(&self, k: AssetId) -> Res {
        self.config
            .asset(k)
            .map(|_| ())
            .ok_or(RejectReason::UnknownAsset)
    }

    /// Withdrawals and transfers out never take unrealized profit or margin in use
    /// (MARGIN §5): the single-asset pool must allow it, and with a USD pool the amount
    /// must be held (no borrowing to withdraw) and the pool, valued without unrealized
    /// profit, must still cover its initial and order margin afterwards.
    fn can_take_out(&self, k: usize, asset: AssetId, amount: Money) -> bool {
        if self.pool_of(k, asset).withdrawable() < amount {
            return false;
        }
        let a = &self.accounts[k];
        if a.asset_mode == AssetMode::Single {
            return true;
        }
        if a.wallets[asset.0 as usize] < amount {
            return false;
        }
        let mut after = a.clone();
        after.wallets[asset.0 as usize] -= amount;
        let mode = after.asset_mode;
        let mut pool = risk::usd_pool(&after, &self.config, &self.marks, self.usd_prices(), |s| {
            risk::is_pooled(mode, s)
        });
        if pool.positions == 0 && pool.order_margin.is_zero() {
            return !pool.unpriced_liability;
        }
        // Value the pool again with every asset's unrealized profit left out.
        let usd = self.usd_prices();
        pool.adjusted_equity = Money::ZERO;
        for (i, asset) in self.config.assets.iter().enumerate() {
            let eq = after.wallets[i] + (pool.equity[i] - after.wallets[i]).min(Money::ZERO);
            match risk::collateral_usd(eq, asset.collateral.as_ref(), usd[i]) {
                Some(v) => pool.adjusted_equity += v,
                None => return false,
            }
        }
        !pool.unpriced_liability && !pool.available().is_negative()
    }

    /// Whether the pool an order on `spec` draws on has `needed` (in the settlement asset)
    /// available, counting `released` (a replaced order's reservation) as free.
    fn margin_covers(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        needed: Money,
        released: Money,
    ) -> Result<bool, RejectReason> {
        if !risk::is_pooled(self.accounts[k].asset_mode, spec) {
            let available = risk::available(
                &self.accounts[k],
                spec.settle_asset,
                &self.config.instruments,
                &self.marks,
            );
            debug_assert_eq!(available, self.pool_of(k, spec.settle_asset).available());
            return Ok(available + released >= needed);
        }
        let pool = self.usd_pool_of(k);
        if pool.unpriced_liability {
            return Err(RejectReason::NoUsdPrice);
        }
        let needed = self
            .requirement_usd(spec.settle_asset, needed)
            .ok_or(RejectReason::NoUsdPrice)?;
        let released = self
            .requirement_usd(spec.settle_asset, released)
            .unwrap_or_default();
        Ok(pool.available() + released >= needed)
    }

    pub(crate) fn pool_of(&self, k: usize, asset: AssetId) -> risk::Pool {
        risk::pool(
            &self.accounts[k],
            asset,
            &self.config.instruments,
            &self.marks,
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
            seq > self.last_seq,
            "sequence numbers must increase: {} after {}",
            seq,
            self.last_seq
        );
        assert!(ts_ns >= self.last_ts_ns, "timestamps must not go back");
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        // Time passing is itself an input: hour boundaries charge interest first.
        self.accrue_interest(ts_ns, out);
        let start = out.len();
        let r = match command {
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
            } => self.adjust_isolated_margin(*account, *instrument, *delta, out),
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
        };
        if let Err(reason) = r {
            assert_eq!(out.len(), start, "a rejected command emitted events");
            out.push(Event::rejected(reason));
        }
        // Every account an event names may have a new cushion: re-band it before the
        // index is next used (a mark tick), not now — most commands are not ticks.
        // (A set, so bounded by the number of distinct accounts however long between
        // ticks.)
        if !self.full_scan {
            for e in &out[..] {
                event_accounts(e, |a| self.dirty.insert(a));
            }
        }
    }

    /// Check every holder on every mark tick (no liquidation index). Same results, more
    /// work: the reference the index is tested against, and a benchmark baseline.
    pub fn with_full_scan(mut self) -> Engine {
        self.full_scan = true;
        self
    }

    /// Amend every order by cancel + submit, never in place. Same results, more work:
    /// the reference the in-place path is tested against.
    pub fn with_amend_by_resubmit(mut self) -> Engine {
        self.amend_in_place = false;
        self
    }

    fn create_account(
        &mut self,
        id: AccountId,
        parent: Option<AccountId>,
        out: &mut Vec<Event>,
    ) -> Res {
        if self.idx(id).is_some() {
            return Err(RejectReason::AccountExists);
        }
        if let Some(p) = parent {
            let pk = self.user_idx(p).map_err(|_| RejectReason::UnknownParent)?;
            if self.accounts[pk].parent.is_some() {
                return Err(RejectReason::ParentIsSubAccount);
            }
        }
        self.insert_account(Account::new(id, parent, self.config.assets.len()));
        out.push(Event::AccountCreated {
            account: id,
            parent,
        });
        Ok(())
    }

    fn deposit(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        self.check_caps(k, asset, amount)?;
        self.before_credit(k, asset, out);
        let w = &mut self.accounts[k].wallets[asset.0 as usize];
        *w += amount;
        let balance = *w;
        self.deposited[asset.0 as usize] += amount;
        self.after_credit(k, asset, amount);
        out.push(Event::Deposited {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    fn withdraw(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        if !self.can_take_out(k, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        let w = &mut self.accounts[k].wallets[asset.0 as usize];
        *w -= amount;
        let balance = *w;
        self.withdrawn[asset.0 as usize] += amount;
        out.push(Event::Withdrawn {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    fn transfer(
        &mut self,
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let fk = self.user_idx(from)?;
        let tk = self.user_idx(to)?;
        self.check_asset(asset)?;
        if fk == tk {
            return Err(RejectReason::TransferToSelf);
        }
        check_amount(amount)?;
        let (fp, tp) = (self.accounts[fk].parent, self.accounts[tk].parent);
        let related = tp == Some(from) || fp == Some(to) || (fp.is_some() && fp == tp);
        if !related {
            return Err(RejectReason::TransferNotRelated);
        }
        if !self.can_take_out(fk, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        self.check_caps(tk, asset, amount)?;
        self.before_credit(tk, asset, out);
        self.accounts[fk].wallets[asset.0 as usize] -= amount;
        self.accounts[tk].wallets[asset.0 as usize] += amount;
        self.after_credit(tk, asset, amount);
        out.push(Event::Transferred {
            from,
            to,
            asset,
            amount,
        });
        Ok(())
    }

    /// Notional of a leg's position at mark plus its open orders at their limit prices:
    /// the exposure a leverage must be allowed for (MARGIN §3).
    fn exposure_notional(
        &self,
        leg: &Leg,
        spec: &InstrumentSpec,
        extra: Money,
        excluded: Option<&OrderMeta>,
    ) -> Money {
        let mut n = extra + leg.order_notional;
        if let Some(m) = self.marks[spec.id.0 as usize] {
            n += if spec.is_inverse() || leg.qty.is_zero() {
                spec.notional(leg.qty, m)
            } else {
                // Linear: |q × M|, from the leg's valuation (shared with the margin sum).
                risk::linear_valuation(leg, spec, m).0.abs()
            };
        }
        if let Some(meta) = excluded {
            n -= meta.open_notional;
        }
        n
    }

    fn set_leverage(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        leverage: u32,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let cfg = Arc::clone(&self.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if leverage == 0 || leverage > spec.max_leverage {
            return Err(RejectReason::LeverageOutOfRange);
        }
        let default_leg = Leg::new(i, spec.max_leverage);
        let leg = self.accounts[k].leg(i).unwrap_or(&default_leg).clone();
        if spec
            .bracket_for(self.exposure_notional(&leg, spec, Money::ZERO, None))
            .max_leverage
            < leverage
        {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        // Try it on a copy: re-reserve the leg's orders at the new leverage and re-check.
        let mut acct = self.accounts[k].clone();
        let mut metas: Vec<(OrderId, OrderMeta)> = Vec::new();
        {
            let l = acct.leg_or_default(spec);
            l.leverage = leverage;
            let mut total = Money::ZERO;
            for oid in &l.open_orders {
                let mut m = self.orders[oid].clone();
                m.reserved = m.margin_notional.div_int(leverage as i64, Rounding::Ceil);
                total += m.reserved;
                metas.push((*oid, m));
            }
            l.order_margin = total;
        }
        if leverage < leg.leverage {
            let p = risk::pool(
                &acct,
                spec.settle_asset,
                &self.config.instruments,
                &self.marks,
            );
            let pooled = risk::is_pooled(acct.asset_mode, spec);
            let under = if pooled {
                let mode = acct.asset_mode;
                let up = risk::usd_pool(&acct, &self.config, &self.marks, self.usd_prices(), |s| {
                    risk::is_pooled(mode, s)
                });
                up.unpriced_liability || up.available().is_negative()
            } else {
                p.available().is_negative()
            };
            if under {
                return Err(RejectReason::LeverageUnderMargin);
            }
            let l = acct.leg(i).expect("leg");
            if l.mode == MarginMode::Isolated && !l.is_flat() {
                let m = self.marks[i.0 as usize].expect("position without mark");
                let eq = l.isolated_margin + risk::upnl(l, spec, m).min(Money::ZERO);
                if eq < risk::position_im(l, spec, m) {
                    return Err(RejectReason::LeverageUnderMargin);
                }
            }
        }
        self.accounts[k] = acct;
        for (oid, m) in metas {
            self.orders.insert(oid, m);
        }
        out.push(Event::LeverageSet {
            account: id,
            instrument: i,
            leverage,
        });
        Ok(())
    }

    fn set_margin_mode(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        mode: MarginMode,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let cfg = Arc::clone(&self.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if mode == MarginMode::Isolated && risk::is_pooled(self.accounts[k].asset_mode, spec) {
            return Err(RejectReason::IsolatedInMultiAsset);
        }
        let mut acct = self.accounts[k].clone();
        let settle = spec.settle_asset.0 as usize;
        let mark = self.marks[i.0 as usize];
        let leg = acct.leg_or_default(spec);
        if leg.mode != mode && !leg.is_flat() {
            let m = mark.expect("position without mark");
            match mode {
                MarginMode::Isolated => {
                    // The new isolated position starts at exactly its initial margin:
                    // IW + uPnL = IM.
                    let iw = (risk::position_im(leg, spec, m) - risk::upnl(leg, spec, m))
                        .max(Money::ZERO);
                    leg.isolated_margin = iw;
                    leg.mode = MarginMode::Isolated;
                    acct.wallets[settle] -= iw;
                }
                MarginMode::Cross => {
                    let iw = leg.isolated_margin;
                    leg.isolated_margin = Money::ZERO;
                    leg.mode = MarginMode::Cross;
                    acct.wallets[settle] += iw;
                }
            }
            let p = risk::pool(
                &acct,
                spec.settle_asset,
                &self.config.instruments,
                &self.marks,
            );
            if p.available().is_negative() {
                return Err(RejectReason::ModeSwitchUnderMargin);
            }
        } else {
            leg.mode = mode;
        }
        self.accounts[k] = acct;
        out.push(Event::MarginModeSet {
            account: id,
            instrument: i,
            mode,
        });
        Ok(())
    }

    fn adjust_isolated_margin(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        delta: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let cfg = Arc::clone(&self.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if delta.is_zero() {
            return Err(RejectReason::DeltaZero);
        }
        // Compared without `abs`, which has no answer for the most negative value.
        if delta < -MAX_AMOUNT || delta > MAX_AMOUNT {
            return Err(RejectReason::AmountTooLarge);
        }
        let leg = match self.accounts[k].leg(i) {
            Some(l) if l.mode == MarginMode::Isolated && !l.is_flat() => l,
            _ => return Err(RejectReason::NoIsolatedPosition),
        };
        let m = self.marks[i.0 as usize].expect("position without mark");
        if delta.is_positive() {
            if self.pool_of(k, spec.settle_asset).withdrawable() < delta {
                return Err(RejectReason::InsufficientBalance);
            }
        } else {
            let after = leg.isolated_margin + delta + risk::upnl(leg, spec, m).min(Money::ZERO);
            if after < risk::position_im(leg, spec, m) {
                return Err(RejectReason::IsolatedMarginTooLow);
            }
        }
        let a = &mut self.accounts[k];
        a.wallets[spec.settle_asset.0 as usize] -= delta;
        let leg = a.leg_mut(i).expect("leg");
        leg.isolated_margin += delta;
        let isolated_margin = leg.isolated_margin;
        out.push(Event::IsolatedMarginAdjusted {
            account: id,
            instrument: i,
            delta,
            isolated_margin,
        });
        Ok(())
    }

    /// Lots of an order that would increase exposure: all of it on the position's side;
    /// on the other side, what is left after closing the part of the position not
    /// already promised to other orders on that side.
    fn increasing_lots(
        &self,
        leg: Option<&Leg>,
        side: Side,
        qty: QtyLots,
        instrument: InstrumentId,
        excluded: Option<OrderId>,
    ) -> i64 {
        let Some(leg) = leg else { return qty.0 };
        let q = leg.qty.0;
        if q == 0 || (q > 0) == (side == Side::Buy) {
            return qty.0;
        }
        let book = &self.books[instrument.0 as usize];
        let promised: i64 = leg
            .open_orders
            .iter()
            .filter(|id| Some(**id) != excluded)
            .filter_map(|id| book.get(*id))
            .filter(|o| o.side == side)
            .map(|o| o.open_qty.0)
            .sum();
        let closable = (q.abs() - promised).max(0);
        (qty.0 - closable).max(0)
    }

    pub(crate) fn next_internal_order_id(&mut self) -> OrderId {
        let id = OrderId(self.next_internal_order);
        self.next_internal_order = self
            .next_internal_order
            .checked_add(1)
            .expect("order ids exhausted");
        id
    }

    fn place_order(&mut self, o: &NewOrder, out: &mut Vec<Event>) -> Res {
        let k = self.user_idx(o.account)?;
        let p = self.prepare_order(k, o, None)?;
        let cfg = Arc::clone(&self.config);
        let spec = &cfg.instruments[p.instrument.0 as usize];
        let accepted = Event::OrderAccepted {
            account: o.account,
            instrument: o.instrument,
            order_id: o.order_id,
            side: o.side,
            price: spec.price_of(p.taker.limit),
            qty: spec.qty_of(p.taker.qty),
        };
        self.execute(
            spec,
            p.taker,
            p.meta,
            Some(accepted),
            p.unfilled_reason,
            None,
            out,
        )
    }

    /// Every check of a new order, without touching state. `replacing` is an order of the
    /// same account being amended: its reservation and quantity are left out of the
    /// checks, as it will be gone when the new one is placed. `k` indexes `o.account`.
    ///
    /// The steps after the order-level checks are shared with `check_amend` (the in-place
    /// amend's re-check), so the two cannot drift apart.
    fn prepare_order(
        &self,
        k: usize,
        o: &NewOrder,
        replacing: Option<&OrderMeta>,
    ) -> Result<Prepared, RejectReason> {
        debug_assert_eq!(self.user_idx(o.account), Ok(k));
        let spec = self.spec(o.instrument)?;
        let mark = self.marks[o.instrument.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        self.check_order_account(k, spec, o.order_id)?;
        if replacing.is_none() && self.orders.contains_key(&o.order_id) {
            return Err(RejectReason::DuplicateOrderId);
        }
        if o.order_type == OrderType::Market && o.tif == TimeInForce::PostOnly {
            return Err(RejectReason::MarketPostOnly);
        }
        let leg = self.accounts[k].leg(o.instrument);
        // Only an order that may rest counts against the limit, and an amend replaces
        // one: a trader at the limit can still close, reduce and reprice.
        let may_rest = o.order_type == OrderType::Limit
            && matches!(o.tif, TimeInForce::Gtc | TimeInForce::PostOnly);
        if replacing.is_none()
            && may_rest
            && leg.is_some_and(|l| l.open_orders.len() >= spec.max_open_orders as usize)
        {
            return Err(RejectReason::TooManyOpenOrders);
        }
        let reduce_only = o.reduce_only || o.close_position;
        let qty = order_qty(spec, leg, o.side, o.qty, reduce_only, o.close_position)?;
        let limit = self.order_limit(spec, mark, o.order_type, o.side, o.price)?;
        let (margin_notional, reserved) = self.order_reservation(
            k,
            spec,
            mark,
            leg,
            Terms {
                side: o.side,
                qty,
                limit,
                reduce_only,
            },
            replacing.map(|m| (o.order_id, m)),
        )?;
        if o.tif == TimeInForce::PostOnly && self.post_only_takes(spec, o.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        let tif = match (o.order_type, o.tif) {
            (OrderType::Market, _) => Tif::Ioc,
            (_, TimeInForce::Gtc) => Tif::Gtc,
            (_, TimeInForce::Ioc) => Tif::Ioc,
            (_, TimeInForce::Fok) => Tif::Fok,
            (_, TimeInForce::PostOnly) => Tif::PostOnly,
        };
        let taker = Taker {
            order_id: o.order_id,
            account: o.account,
            side: o.side,
            limit,
            qty,
            tif,
            stp: o.stp,
            reduce_only,
        };
        let meta = OrderMeta {
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            reduce_only,
            post_only: o.tif == TimeInForce::PostOnly,
            margin_notional,
            reserved,
            open_notional: Money::ZERO,
        };
        let unfilled_reason = if o.order_type == OrderType::Market {
            CancelReason::PriceBand
        } else {
            CancelReason::Unfilled
        };
        Ok(Prepared {
            instrument: spec.id,
            taker,
            meta,
            unfilled_reason,
        })
    }

    /// The re-check of an amend that loses priority (new price or larger size), for the
    /// in-place path: `prepare_order` of the order the amend re-submits (`amended_order`:
    /// same id, side and flags, a GTC or post-only limit order, replacing the old one),
    /// with the fields an amend fixes folded in and nothing built that the book does not
    /// need. The same steps in the same order, so the same rejection and the same
    /// reservation; `amend_order` asserts that in debug builds.
    #[inline]
    fn check_amend(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        id: OrderId,
        meta: &OrderMeta,
        price: PriceTicks,
        qty: QtyLots,
    ) -> Result<AmendCheck, RejectReason> {
        let mark = self.marks[spec.id.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        self.check_order_account(k, spec, id)?;
        // No duplicate-id check (the id is the order's own) and no market post-only
        // check (an amend is a limit order).
        let leg = self.accounts[k].leg(spec.id);
        let qty = order_qty(spec, leg, meta.side, qty, meta.reduce_only, false)?;
        let limit = self.order_limit(spec, mark, OrderType::Limit, meta.side, price)?;
        let (margin_notional, reserved) = self.order_reservation(
            k,
            spec,
            mark,
            leg,
            Terms {
                side: meta.side,
                qty,
                limit,
                reduce_only: meta.reduce_only,
            },
            Some((id, meta)),
        )?;
        if meta.post_only && self.post_only_takes(spec, meta.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        Ok(AmendCheck {
            limit,
            qty,
            margin_notional,
            reserved,
        })
    }

    /// Order checks that depend on the account and the order id only.
    #[inline]
    fn check_order_account(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        id: OrderId,
    ) -> Result<(), RejectReason> {
        if id.0 >= RESERVED_ORDER_ID_MIN {
            return Err(RejectReason::OrderIdReserved);
        }
        if self.accounts[k].asset_mode == AssetMode::Multi && spec.is_inverse() {
            return Err(RejectReason::CoinMInMultiAsset);
        }
        Ok(())
    }

    /// The limit price of an order: a limit order's own, inside the mark's band; a market
    /// order's, the band's far edge.
    #[inline]
    fn order_limit(
        &self,
        spec: &InstrumentSpec,
        mark: Price,
        order_type: OrderType,
        side: Side,
        price: PriceTicks,
    ) -> Result<PriceTicks, RejectReason> {
        let (band_low, band_high) = self.bands[spec.id.0 as usize];
        debug_assert_eq!((band_low, band_high), band(spec, mark));
        match order_type {
            OrderType::Limit => {
                if price.0 <= 0 {
                    return Err(RejectReason::PriceNotPositive);
                }
                if price < band_low || price > band_high {
                    return Err(RejectReason::PriceOutOfBand);
                }
                Ok(price)
            }
            OrderType::Market => Ok(match side {
                Side::Buy => band_high,
                Side::Sell => band_low,
            }),
        }
    }

    /// Whether a post-only order at `limit` would take liquidity.
    #[inline]
    fn post_only_takes(&self, spec: &InstrumentSpec, side: Side, limit: PriceTicks) -> bool {
        let book = &self.books[spec.id.0 as usize];
        match side {
            Side::Buy => book.best_ask().is_some_and(|a| a <= limit),
            Side::Sell => book.best_bid().is_some_and(|b| b >= limit),
        }
    }

    /// The margin check of a sized and priced order: `(margin_notional, reserved)` of its
    /// exposure-increasing part, or the rejection (bracket, margin). `replacing`: the
    /// amended order (id and meta), whose reservation counts as free and whose quantity
    /// and notional are left out. `leg` is the account's leg on `spec`, if any.
    #[inline]
    fn order_reservation(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        mark: Price,
        leg: Option<&Leg>,
        t: Terms,
        replacing: Option<(OrderId, &OrderMeta)>,
    ) -> Result<(Money, Money), RejectReason> {
        if t.reduce_only {
            return Ok((Money::ZERO, Money::ZERO));
        }
        let excluded = replacing.map(|(id, _)| id);
        let released = replacing.map(|(_, m)| m.reserved).unwrap_or_default();
        let limit_price = spec.price_of(t.limit);
        // The price that makes the order's notional largest: a linear buy at
        // max(limit, mark) (MARGIN §3); an inverse order's coin notional grows as the price
        // falls, so it is valued at min(limit, mark) on either side.
        let margin_price = match (spec.is_inverse(), t.side) {
            (true, _) => limit_price.min(mark),
            (false, Side::Buy) => limit_price.max(mark),
            (false, Side::Sell) => limit_price,
        };
        let leverage = leg
            .map(|l| l.leverage)
            .unwrap_or(risk::DEFAULT_LEVERAGE.min(spec.max_leverage));
        let incr = self.increasing_lots(leg, t.side, t.qty, spec.id, excluded);
        if incr <= 0 {
            return Ok((Money::ZERO, Money::ZERO));
        }
        let extra = spec.notional(QtyLots(incr), margin_price);
        let exposure = match leg {
            Some(l) => self.exposure_notional(l, spec, extra, replacing.map(|(_, m)| m)),
            None => extra,
        };
        if spec.bracket_for(exposure).max_leverage < leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        // risk::order_cost's IM and fee to close, from the notional in hand.
        let initial_margin = extra.div_int(leverage as i64, Rounding::Ceil);
        let close_fee = if spec.fee_to_close {
            risk::fee_to_close(spec, QtyLots(incr), extra, t.side == Side::Buy, leverage)
        } else {
            Money::ZERO
        };
        debug_assert_eq!((initial_margin, close_fee), {
            let c = risk::order_cost(
                spec,
                QtyLots(incr),
                margin_price,
                t.side == Side::Buy,
                leverage,
            );
            (c.initial_margin, c.close_fee)
        });
        let full = if incr == t.qty.0 {
            extra
        } else {
            spec.notional(t.qty, margin_price)
        };
        let fee_est = full.mul_rate(spec.taker_fee.max(Rate::ZERO), Rounding::Ceil);
        let needed = initial_margin + close_fee + fee_est;
        if !self.margin_covers(k, spec, needed, released)? {
            return Err(RejectReason::InsufficientMargin);
        }
        Ok((extra, initial_margin))
    }

    /// Submit a taker to the book and settle everything it did. `fee_override` replaces
    /// the taker fee (liquidation orders). Returns a rejection only for post-only and
    /// fill-or-kill outcomes, in which case nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn execute(
        &mut self,
        spec: &InstrumentSpec,
        taker: Taker,
        meta: OrderMeta,
        accepted: Option<Event>,
        unfilled_reason: CancelReason,
        fee_override: Option<(Rate, AccountId)>,
        out: &mut Vec<Event>,
    ) -> Res {
        let i = spec.id.0 as usize;
        // Swap the reusable buffer out without allocating a replacement.
        let mut res = std::mem::replace(
            &mut self.scratch,
            MatchResult {
                fills: Vec::new(),
                expired_makers: Vec::new(),
                outcome: TakerOutcome::Filled,
            },
        );
        let r = self.books[i].submit(&taker, &mut res);
        assert!(r.is_ok(), "book refused a checked order: {r:?}");
        match res.outcome {
            TakerOutcome::PostOnlyRejected => {
                self.scratch = res;
                return Err(RejectReason::PostOnlyWouldTake);
            }
            TakerOutcome::FokRejected => {
                self.scratch = res;
                return Err(RejectReason::FokCannotFill);
            }
            _ => {}
        }
        if let Some(ev) = accepted {
            out.push(ev);
        }
        let mut touched: Vec<(AccountId, InstrumentId)> = Vec::new();
        for f in &res.fills {
            let (taker_fee, maker_fee, tpnl, mpnl) =
                self.settle_fill(spec, &taker, f, fee_override);
            out.push(Event::Trade {
                instrument: spec.id,
                price: spec.price_of(f.price),
                qty: spec.qty_of(f.qty),
                taker_side: taker.side,
                taker_account: taker.account,
                taker_order: taker.order_id,
                maker_account: f.maker_account,
                maker_order: f.maker_order,
                taker_fee,
                maker_fee,
                taker_realized_pnl: tpnl,
                maker_realized_pnl: mpnl,
            });
            self.after_maker_fill(spec, f);
            touched.push((f.maker_account, spec.id));
        }
        for m in &res.expired_makers {
            self.forget_order(m.order_id, spec);
            out.push(Event::OrderCanceled {
                account: m.account,
                order_id: m.order_id,
                open_qty: spec.qty_of(m.open_qty),
                reason: CancelReason::SelfTrade,
            });
        }
        match res.outcome {
            TakerOutcome::Rested { open_qty } => {
                let mut meta = meta;
                let lev = self.leverage_of(taker.account, spec);
                meta.margin_notional = meta.margin_notional.mul_div(
                    open_qty.0 as i128,
                    taker.qty.0 as i128,
                    Rounding::Ceil,
                );
                meta.reserved = meta.margin_notional.div_int(lev as i64, Rounding::Ceil);
                meta.open_notional = spec.notional(open_qty, spec.price_of(taker.limit));
                let k = self.idx(taker.account).expect("taker account");
                let leg = self.accounts[k].leg_or_default(spec);
                leg.order_margin += meta.reserved;
                leg.order_notional += meta.open_notional;
                leg.add_order(taker.order_id);
                self.orders.insert(taker.order_id, meta);
                out.push(Event::OrderRested {
                    order_id: taker.order_id,
                    open_qty: spec.qty_of(open_qty),
                });
            }
            TakerOutcome::Filled => {}
            TakerOutcome::Expired { unfilled } => {
                if unfilled.0 > 0 && taker.order_id.0 < RESERVED_ORDER_ID_MIN {
                    out.push(Event::OrderCanceled {
                        account: taker.account,
                        order_id: taker.order_id,
                        open_qty: spec.qty_of(unfilled),
                        reason: unfilled_reason,
                    });
                }
            }
            TakerOutcome::SelfTradeExpired { unfilled } => out.push(Event::OrderCanceled {
                account: taker.account,
                order_id: taker.order_id,
                open_qty: spec.qty_of(unfilled),
                reason: CancelReason::SelfTrade,
            }),
            TakerOutcome::PostOnlyRejected | TakerOutcome::FokRejected => unreachable!(),
        }
        if !touched.is_empty() {
            // Positions changed only if something filled.
            touched.push((taker.account, spec.id));
        }
        touched.sort();
        touched.dedup();
        for (a, _) in touched {
            self.fix_reduce_only(a, spec, out);
            if let Some(k) = self.idx(a) {
                // With a USD pool a negative balance is a loan, not a deficit.
                if !self.accounts[k].system && !risk::is_pooled(self.accounts[k].asset_mode, spec) {
                    self.cover_deficit(k, spec.settle_asset, out);
                }
            }
        }
        self.scratch = res;
        Ok(())
    }

    pub(crate) fn leverage_of(&self, account: AccountId, spec: &InstrumentSpec) -> u32 {
        self.account(account)
            .and_then(|a| a.leg(spec.id))
            .map(|l| l.leverage)
            .unwrap_or(risk::DEFAULT_LEVERAGE.min(spec.max_leverage))
    }

    /// Remove an order's engine-side state (the book has already dropped it).
    pub(crate) fn forget_order(&mut self, id: OrderId, spec: &InstrumentSpec) {
        let meta = self.orders.remove(&id).expect("order meta");
        let k = self.idx(meta.account).expect("order account");
        let leg = self.accounts[k].leg_mut(spec.id).expect("order leg");
        leg.order_margin -= meta.reserved;
        leg.order_notional -= meta.open_notional;
        leg.remove_order(id);
        assert!(!leg.order_margin.is_negative(), "order margin below zero");
    }

    /// A maker's open quantity went down by a fill: scale its reservation pro rata.
    fn after_maker_fill(&mut self, spec: &InstrumentSpec, f: &perpcore_book::Fill) {
        if f.maker_done {
            self.forget_order(f.maker_order, spec);
            return;
        }
        let before = f.maker_remaining + f.qty;
        self.resize_order(
            spec,
            f.maker_account,
            f.maker_order,
            f.price,
            before,
            f.maker_remaining,
        );
    }

    /// An order's open quantity went from `before` to `after` (> 0) at `price`, keeping
    /// its place: scale its reservation pro rata and update the leg's sums.
    fn resize_order(
        &mut self,
        spec: &InstrumentSpec,
        account: AccountId,
        id: OrderId,
        price: PriceTicks,
        before: QtyLots,
        after: QtyLots,
    ) {
        assert!(after.0 > 0 && after < before, "resize must shrink an order");
        let lev = self.leverage_of(account, spec);
        let meta = self.orders.get_mut(&id).expect("order meta");
        let (old_reserved, old_notional) = (meta.reserved, meta.open_notional);
        meta.margin_notional =
            meta.margin_notional
                .mul_div(after.0 as i128, before.0 as i128, Rounding::Ceil);
        meta.reserved = meta.margin_notional.div_int(lev as i64, Rounding::Ceil);
        meta.open_notional = spec.notional(after, spec.price_of(price));
        let (reserved, notional) = (meta.reserved, meta.open_notional);
        let k = self.idx(account).expect("order account");
        self.accounts[k]
            .leg_mut(spec.id)
            .expect("order leg")
            .replace_order_sums((old_reserved, old_notional), (reserved, notional));
    }

    /// Reduce-only orders may never exceed the position or sit on its side: cut or cancel
    /// them after the position changed (rule R3).
    fn fix_reduce_only(&mut self, account: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        let Some(k) = self.idx(account) else { return };
        let Some(leg) = self.accounts[k].leg(spec.id) else {
            return;
        };
        let pos = leg.qty.0;
        // Most legs have no reduce-only order: look before allocating.
        if !leg
            .open_orders
            .iter()
            .any(|id| self.orders.get(id).is_some_and(|m| m.reduce_only))
        {
            return;
        }
        let ids: Vec<OrderId> = leg
            .open_orders
            .iter()
            .copied()
            .filter(|id| self.orders.get(id).is_some_and(|m| m.reduce_only))
            .collect();
        for id in ids {
            let book = &mut self.books[spec.id.0 as usize];
            let o = *book.get(id).expect("reduce-only order in book");
            let wrong_side = pos == 0 || (pos > 0) == (o.side == Side::Buy);
            if wrong_side {
                book.cancel(id).expect("cancel");
                self.forget_order(id, spec);
                out.push(Event::OrderCanceled {
                    account,
                    order_id: id,
                    open_qty: spec.qty_of(o.open_qty),
                    reason: CancelReason::ReduceOnlyObsolete,
                });
            } else if o.open_qty.0 > pos.abs() {
                book.reduce_qty(id, QtyLots(pos.abs())).expect("reduce");
                self.resize_order(spec, account, id, o.price, o.open_qty, QtyLots(pos.abs()));
                out.push(Event::OrderReduced {
                    order_id: id,
                    open_qty: spec.qty_of(QtyLots(pos.abs())),
                });
            }
        }
    }

    fn cancel_order(&mut self, account: AccountId, id: OrderId, out: &mut Vec<Event>) -> Res {
        self.user_idx(account)?;
        let meta = self.orders.get(&id).ok_or(RejectReason::UnknownOrder)?;
        if meta.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let cfg = Arc::clone(&self.config);
        let spec = &cfg.instruments[meta.instrument.0 as usize];
        self.cancel_one(spec, id, CancelReason::User, out);
        Ok(())
    }

    pub(crate) fn cancel_one(
        &mut self,
        spec: &InstrumentSpec,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let o = self.books[spec.id.0 as usize]
            .cancel(id)
            .expect("order in book");
        self.forget_order(id, spec);
        out.push(Event::OrderCanceled {
            account: o.account,
            order_id: id,
            open_qty: spec.qty_of(o.open_qty),
            reason,
        });
    }

    /// Cancel every order of the account on the instruments `filter` accepts.
    pub(crate) fn cancel_where(
        &mut self,
        k: usize,
        filter: impl Fn(&InstrumentSpec) -> bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let mut victims: Vec<(InstrumentId, OrderId)> = Vec::new();
        for leg in &self.accounts[k].legs {
            if filter(&self.config.instruments[leg.instrument.0 as usize]) {
                victims.extend(leg.open_orders.iter().map(|id| (leg.instrument, *id)));
            }
        }
        let cfg = Arc::clone(&self.config);
        for (i, id) in victims {
            self.cancel_one(&cfg.instruments[i.0 as usize], id, reason, out);
        }
    }

    fn cancel_all(
        &mut self,
        account: AccountId,
        instrument: Option<InstrumentId>,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(account)?;
        if let Some(i) = instrument {
            self.spec(i)?;
        }
        self.cancel_where(
            k,
            |s| instrument.is_none_or(|i| s.id == i),
            CancelReason::User,
            out,
        );
        Ok(())
    }

    fn amend_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(account)?;
        let meta = self
            .orders
            .get(&id)
            .ok_or(RejectReason::UnknownOrder)?
            .clone();
        if meta.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        // Borrowed from the field, not through an `Arc` clone (an atomic increment and
        // decrement per amend); the paths that call `&mut self` methods clone it.
        let spec = &self.config.instruments[meta.instrument.0 as usize];
        let (slot, resting) = self.books[spec.id.0 as usize]
            .find(id)
            .map(|(slot, o)| (slot, *o))
            .expect("order in book");
        let new_price = price.unwrap_or(resting.price);
        let new_qty = qty.unwrap_or(resting.open_qty);
        if new_price == resting.price && new_qty == resting.open_qty {
            return Err(RejectReason::AmendNoChange);
        }
        if new_qty.0 <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if new_price == resting.price && new_qty < resting.open_qty {
            // Size down keeps priority.
            let cfg = Arc::clone(&self.config);
            let spec = &cfg.instruments[meta.instrument.0 as usize];
            self.books[spec.id.0 as usize]
                .reduce_qty(id, new_qty)
                .expect("reduce");
            self.resize_order(spec, account, id, resting.price, resting.open_qty, new_qty);
            out.push(Event::OrderAmended {
                order_id: id,
                price: spec.price_of(new_price),
                open_qty: spec.qty_of(new_qty),
                priority_kept: true,
            });
            return Ok(());
        }
        if meta.reduce_only {
            let pos = self.accounts[k]
                .leg(spec.id)
                .map(|l| l.qty.0.abs())
                .unwrap_or(0);
            if new_qty.0 > pos {
                return Err(RejectReason::AmendIncreasesReduceOnly);
            }
        }
        // Price change or size up: the order loses its place. It is re-checked as a new
        // order with the old one's reservation released; if the new one is refused the
        // old one stays untouched.
        if self.amend_in_place {
            let checked = self.check_amend(k, spec, id, &meta, new_price, new_qty);
            debug_assert_eq!(
                checked,
                self.prepare_order(
                    k,
                    &amended_order(&meta, id, new_price, new_qty),
                    Some(&meta)
                )
                .map(|p| AmendCheck {
                    limit: p.taker.limit,
                    qty: p.taker.qty,
                    margin_notional: p.meta.margin_notional,
                    reserved: p.meta.reserved,
                }),
                "check_amend disagrees with prepare_order"
            );
            let c = checked?;
            // When the new price does not reach the other side, cancel + submit would
            // only re-rest the order at the back of its new level: do that in place. The
            // state and the events are the same as on the general path below (execute's
            // `Rested` branch with nothing filled).
            match self.books[spec.id.0 as usize].requeue_at(slot, id, c.limit, c.qty) {
                Ok(_) => {
                    // execute's `Rested` formula with nothing filled is
                    // margin_notional / leverage, rounded up: what the check reserved.
                    debug_assert_eq!(
                        c.reserved,
                        c.margin_notional
                            .div_int(self.leverage_of(account, spec) as i64, Rounding::Ceil)
                    );
                    let open_notional = spec.notional(c.qty, spec.price_of(c.limit));
                    let m = self.orders.get_mut(&id).expect("order meta");
                    let old = (m.reserved, m.open_notional);
                    // Account, instrument, side and flags are the amended order's own.
                    m.margin_notional = c.margin_notional;
                    m.reserved = c.reserved;
                    m.open_notional = open_notional;
                    let leg = self.accounts[k].leg_mut(spec.id).expect("order leg");
                    leg.replace_order_sums(old, (c.reserved, open_notional));
                    assert!(!leg.order_margin.is_negative(), "order margin below zero");
                    out.push(Event::OrderAmended {
                        order_id: id,
                        price: spec.price_of(new_price),
                        open_qty: spec.qty_of(new_qty),
                        priority_kept: false,
                    });
                    out.push(Event::OrderRested {
                        order_id: id,
                        open_qty: spec.qty_of(c.qty),
                    });
                    return Ok(());
                }
                // It would trade: cancel + submit below (nothing changed; the check there
                // repeats this one on the same state).
                Err(perpcore_book::BookError::WouldCross(_)) => {}
                Err(e) => panic!("requeue of a checked amend failed: {e}"),
            }
        }
        let prepared = self.prepare_order(
            k,
            &amended_order(&meta, id, new_price, new_qty),
            Some(&meta),
        )?;
        let cfg = Arc::clone(&self.config);
        let spec = &cfg.instruments[meta.instrument.0 as usize];
        self.books[spec.id.0 as usize]
            .cancel(id)
            .expect("order in book");
        self.forget_order(id, spec);
        out.push(Event::OrderAmended {
            order_id: id,
            price: spec.price_of(new_price),
            open_qty: spec.qty_of(new_qty),
            priority_kept: false,
        });
        let r = self.execute(
            spec,
            prepared.taker,
            prepared.meta,
            None,
            prepared.unfilled_reason,
            None,
            out,
        );
        assert!(
            r.is_ok(),
            "a prepared amend cannot be refused by the book: {r:?}"
        );
        Ok(())
    }

    fn set_index_price(&mut self, i: InstrumentId, price: Price, out: &mut Vec<Event>) -> Res {
        let tick = self.spec(i)?.tick_size;
        check_price(price)?;
        if price < tick {
            return Err(RejectReason::PriceBelowTick);
        }
        self.market[i.0 as usize].index = Some(price);
        out.push(Event::IndexPriceSet {
            instrument: i,
            price,
        });
        Ok(())
    }

    fn set_funding_rate(
        &mut self,
        i: InstrumentId,
        rate: Rate,
        next_funding_ns: u64,
        out: &mut Vec<Event>,
    ) -> Res {
        self.spec(i)?;
        if rate < -Rate::ONE || rate > Rate::ONE {
            return Err(RejectReason::RateOutOfRange);
        }
        let m = &mut self.market[i.0 as usize];
        m.funding_rate = Some(rate);
        m.next_funding_ns = next_funding_ns;
        out.push(Event::FundingRateSet {
            instrument: i,
            rate,
            next_funding_ns,
        });
        Ok(())
    }

    fn set_reference_prices(
        &mut self,
        i: InstrumentId,
        best_bid: Option<Price>,
        best_ask: Option<Price>,
        last_trade: Option<Price>,
        out: &mut Vec<Event>,
    ) -> Res {
        self.spec(i)?;
        for p in [best_bid, best_ask, last_trade].into_iter().flatten() {
            check_price(p)?;
        }
        let m = &mut self.market[i.0 as usize];
        // An absent side keeps its value, so the pair to check is the merged one.
        let (bid, ask) = (best_bid.or(m.best_bid), best_ask.or(m.best_ask));
        if let (Some(b), Some(a)) = (bid, ask) {
            if b >= a {
                return Err(RejectReason::CrossedReferencePrices);
            }
        }
        m.best_bid = bid;
        m.best_ask = ask;
        m.last_trade = last_trade.or(m.last_trade);
        out.push(Event::ReferencePricesSet {
            instrument: i,
            best_bid,
            best_ask,
            last_trade,
        });
        Ok(())
    }

    fn set_mark_price(&mut self, i: InstrumentId, price: Price, out: &mut Vec<Event>) -> Res {
        let tick = self.spec(i)?.tick_size;
        if !price.is_positive() {
            return Err(RejectReason::PriceNotPositive);
        }
        if price > MAX_PRICE {
            return Err(RejectReason::PriceTooLarge);
        }
        // Below one tick no order price exists on the grid, and the band would end at 0.
        if price < tick {
            return Err(RejectReason::PriceBelowTick);
        }
        self.marks[i.0 as usize] = Some(price);
        self.bands[i.0 as usize] = band(&self.config.instruments[i.0 as usize], price);
        out.push(Event::MarkPriceSet {
            instrument: i,
            price,
        });
        self.check_liquidations(i, out);
        Ok(())
    }
}

/// The new order an amend of `id` to `price` × `qty` re-submits: the same side and flags,
/// a GTC (or post-only) limit order.
fn amended_order(meta: &OrderMeta, id: OrderId, price: PriceTicks, qty: QtyLots) -> NewOrder {
    NewOrder {
        account: meta.account,
        instrument: meta.instrument,
        order_id: id,
        side: meta.side,
        order_type: OrderType::Limit,
        tif: if meta.post_only {
            TimeInForce::PostOnly
        } else {
            TimeInForce::Gtc
        },
        price,
        qty,
        reduce_only: meta.reduce_only,
        close_position: false,
        stp: StpMode::default(),
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
        | Event::AutoExchanged { account, .. } => out(*account),
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
        | Event::ReferencePricesSet { .. } => {}
    }
}

pub(crate) fn check_price(price: Price) -> Result<(), RejectReason> {
    if !price.is_positive() {
        return Err(RejectReason::PriceNotPositive);
    }
    if price > MAX_PRICE {
        return Err(RejectReason::PriceTooLarge);
    }
    Ok(())
}

fn check_amount(amount: Money) -> Result<(), RejectReason> {
    if !amount.is_positive() {
        return Err(RejectReason::AmountNotPositive);
    }
    if amount > MAX_AMOUNT {
        return Err(RejectReason::AmountTooLarge);
    }
    Ok(())
}

/// The mark price band `mark × (1 ± band)` in ticks, inside the band.
pub(crate) fn band(spec: &InstrumentSpec, mark: Price) -> (PriceTicks, PriceTicks) {
    // The band is a rate in (0, 1) (the configuration check), so `d` ≤ mark fits a price.
    let d = Price(
        i64::try_from(mul_div(
            mark.raw() as i128,
            spec.price_band.raw() as i128,
            RATE_SCALE as i128,
            Rounding::Floor,
        ))
        .expect("a fraction of a price is a price"),
    );
    let low = PriceTicks(spec.ticks_of(mark - d, Rounding::Ceil).0.max(1));
    let high = spec.ticks_of(mark + d, Rounding::Floor);
    // 1 ≤ low ≤ high by construction, for any mark: near one tick the band's ends can
    // cross (a mark of 0.019 with ticks of 0.01 and a 5% band gives 2 and 1), and then the
    // band is the one price `low`. No order is ever priced at 0 or in an empty band.
    let high = PriceTicks(high.0.max(low.0));
    assert!(
        1 <= low.0 && low <= high,
        "band {low:?}..{high:?} at mark {mark}"
    );
    (low, high)
}
