//! The canonical encoding of a [`State`] (the snapshot format and the input of the state
//! hash), restore, and the full invariant check.
//!
//! The canonical encoding is bincode (fixed-width little-endian) of, in order: the
//! configuration, last sequence number and timestamp, the next internal order id, marks,
//! market data, per-asset fee income, index prices and interest income, the interest
//! slot, deposits and withdrawals, every account in creation order, then per instrument
//! every resting order in the book's canonical order (bids best→worst, asks best→worst,
//! FIFO within a level) with its engine-side meta, then the conditional orders in
//! ascending id, the conversion desk, the trailing-stop segments per group and the next
//! activation number. Hash-map order never enters it; the
//! indexes never enter it (restore rebuilds them with `Indexes::rebuild`).

use crate::conditional::TrailKey;
use crate::engine::Engine;
use crate::error::{InvariantViolation, RestoreError};
use crate::indexes::Indexes;
use crate::state::{Conditional, MarketData, OrderMeta, State};
use bincode::{Decode, Encode};
use perpcore_book::{Book, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_risk::Account;
use perpcore_types::*;

#[derive(Encode, Decode)]
struct OrderRecord {
    order_id: OrderId,
    account: AccountId,
    side: Side,
    price: PriceTicks,
    open_qty: QtyLots,
    reduce_only: bool,
    meta: OrderMeta,
}

/// The canonical encoding of a [`State`]: the same fields, with each book as its resting
/// orders in canonical order.
#[derive(Encode, Decode)]
struct Canonical {
    config: Config,
    last_seq: u64,
    last_ts_ns: u64,
    next_internal_order: u64,
    marks: Vec<Option<Price>>,
    market: Vec<MarketData>,
    fee_income: Vec<Money>,
    index_usdt: Vec<Option<IndexPrice>>,
    index_usd: Vec<Option<IndexPrice>>,
    interest_income: Vec<Money>,
    interest_slot: u64,
    deposited: Vec<Money>,
    withdrawn: Vec<Money>,
    accounts: Vec<Account>,
    books: Vec<Vec<OrderRecord>>,
    /// Conditional orders in ascending id.
    conditionals: Vec<Conditional>,
    conversion_desk: Vec<Money>,
    /// Trailing-stop segments in ascending group, each in ascending activation number.
    trails: Vec<(TrailKey, Vec<(u64, Price)>)>,
    next_activation: u64,
}

impl State {
    fn to_canonical(&self) -> Canonical {
        Canonical {
            config: (*self.config).clone(),
            last_seq: self.last_seq,
            last_ts_ns: self.last_ts_ns,
            next_internal_order: self.next_internal_order,
            marks: self.marks.clone(),
            market: self.market.clone(),
            fee_income: self.fee_income.clone(),
            index_usdt: self.index_usdt.clone(),
            index_usd: self.index_usd.clone(),
            interest_income: self.interest_income.clone(),
            interest_slot: self.interest_slot,
            deposited: self.deposited.clone(),
            withdrawn: self.withdrawn.clone(),
            accounts: self.accounts.clone(),
            books: self
                .books
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|o: &RestingOrder| OrderRecord {
                            order_id: o.order_id,
                            account: o.account,
                            side: o.side,
                            price: o.price,
                            open_qty: o.open_qty,
                            reduce_only: o.reduce_only,
                            meta: self.orders[&o.order_id].clone(),
                        })
                        .collect()
                })
                .collect(),
            conditionals: self.conditionals.values().cloned().collect(),
            conversion_desk: self.conversion_desk.clone(),
            trails: self
                .trails
                .iter()
                .map(|(k, segs)| (*k, segs.iter().map(|(a, e)| (*a, *e)).collect()))
                .collect(),
            next_activation: self.next_activation,
        }
    }

    /// The canonical encoding (the snapshot format).
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self.to_canonical(), bincode_config()).expect("encode state")
    }

    /// blake3 over the canonical encoding.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// Decodes a canonical encoding, checking its shape against its configuration and
    /// rebuilding the books (the invariants are the caller's to check).
    pub fn decode(bytes: &[u8]) -> Result<State, RestoreError> {
        let (c, used): (Canonical, usize) = bincode::decode_from_slice(bytes, bincode_config())
            .map_err(|e| RestoreError::Decode(e.to_string()))?;
        if used != bytes.len() {
            return Err(RestoreError::TrailingBytes(bytes.len() - used));
        }
        let mut s = State::new(c.config);
        let (assets, instruments) = (s.fee_income.len(), s.marks.len());
        if [c.marks.len(), c.market.len(), c.books.len()] != [instruments; 3] {
            return Err(RestoreError::ShapeMismatch("instrument tables"));
        }
        if [
            c.fee_income.len(),
            c.index_usdt.len(),
            c.index_usd.len(),
            c.interest_income.len(),
            c.deposited.len(),
            c.withdrawn.len(),
            c.conversion_desk.len(),
        ] != [assets; 7]
        {
            return Err(RestoreError::ShapeMismatch("asset tables"));
        }
        for (i, m) in c.marks.iter().enumerate() {
            if let Some(m) = m {
                let spec = &s.config.instruments[i];
                if !m.is_positive() || *m > MAX_PRICE || *m < spec.tick_size {
                    return Err(RestoreError::MarkOutOfRange(spec.id));
                }
            }
        }
        s.last_seq = c.last_seq;
        s.last_ts_ns = c.last_ts_ns;
        s.next_internal_order = c.next_internal_order;
        s.marks = c.marks;
        s.market = c.market;
        s.fee_income = c.fee_income;
        s.index_usdt = c.index_usdt;
        s.index_usd = c.index_usd;
        s.interest_income = c.interest_income;
        s.interest_slot = c.interest_slot;
        s.deposited = c.deposited;
        s.withdrawn = c.withdrawn;
        s.conversion_desk = c.conversion_desk;
        s.accounts = c.accounts;
        let mut res = MatchResult::new();
        for (i, orders) in c.books.into_iter().enumerate() {
            let mut book = Book::new();
            for o in orders {
                // Canonical order is FIFO per level and levels never cross, so a GTC
                // submit rests each order at the tail of its level: the queue is rebuilt.
                let t = Taker {
                    order_id: o.order_id,
                    account: o.account,
                    side: o.side,
                    limit: o.price,
                    qty: o.open_qty,
                    tif: Tif::Gtc,
                    stp: StpMode::ExpireTaker,
                    reduce_only: o.reduce_only,
                };
                book.submit(&t, &mut res)
                    .map_err(|e| RestoreError::Book(e.to_string()))?;
                if res.outcome
                    != (TakerOutcome::Rested {
                        open_qty: o.open_qty,
                    })
                {
                    return Err(RestoreError::OrderCrosses(o.order_id));
                }
                if s.orders.insert(o.order_id, o.meta).is_some() {
                    return Err(RestoreError::DuplicateOrder(o.order_id));
                }
            }
            s.books[i] = book;
        }
        for c in c.conditionals {
            let id = c.order.order_id;
            if s.orders.contains_key(&id) || s.conditionals.insert(id, c).is_some() {
                return Err(RestoreError::DuplicateOrder(id));
            }
        }
        // Strictly ascending groups and activation numbers: the one canonical encoding
        // (what they must hold is checked by the index rebuild).
        let mut last_key = None;
        for (key, segs) in c.trails {
            let mut last_start = None;
            for (start, extreme) in segs {
                if last_start >= Some(start) {
                    return Err(RestoreError::ShapeMismatch("trailing-stop segments"));
                }
                last_start = Some(start);
                s.trails.entry(key).or_default().insert(start, extreme);
            }
            if last_key >= Some(key) {
                return Err(RestoreError::ShapeMismatch("trailing-stop segments"));
            }
            last_key = Some(key);
        }
        s.next_activation = c.next_activation;
        Ok(s)
    }
}

impl Engine {
    /// The canonical encoding of all state (also the snapshot format).
    pub fn snapshot(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// blake3 over the canonical encoding.
    pub fn state_hash(&self) -> [u8; 32] {
        self.state.hash()
    }

    /// Hash of everything but the sequence number and timestamp: two states with equal
    /// content hashes differ only in how many commands they have seen. Tests use it to
    /// prove a rejected command changed nothing.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut c = self.state.to_canonical();
        c.last_seq = 0;
        c.last_ts_ns = 0;
        *blake3::hash(&bincode::encode_to_vec(c, bincode_config()).expect("encode state"))
            .as_bytes()
    }

    pub fn state_hash_hex(&self) -> String {
        self.state_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Rebuild an engine from `snapshot()` bytes: the state decoded, its indexes rebuilt
    /// (`Indexes::rebuild`). Refuses trailing bytes and any state that fails
    /// `check_invariants`.
    pub fn restore(bytes: &[u8]) -> Result<Engine, RestoreError> {
        let state = State::decode(bytes)?;
        let ix = Indexes::rebuild(&state)?;
        let e = Engine {
            state,
            ix,
            tmp: Default::default(),
            #[cfg(feature = "reference-paths")]
            reference: Default::default(),
        };
        e.check_invariants()?;
        Ok(e)
    }

    /// Every invariant of MARGIN §10 and the book/order bookkeeping. Cheap enough to run
    /// after every command in tests; returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.invariants().map_err(InvariantViolation)
    }

    fn invariants(&self) -> Result<(), String> {
        for a in &self.state.accounts {
            self.check_legs(a)?;
        }
        self.check_conservation()?;
        self.check_funds()?;
        self.check_books()
    }

    /// The insurance funds never go negative (MARGIN §7 step 4: what a fund cannot absorb
    /// is auto-deleveraged).
    fn check_funds(&self) -> Result<(), String> {
        for (k, asset) in self.state.config.assets.iter().enumerate() {
            let Some(fk) = self.idx(crate::engine::fund_account_id(AssetId::at(k))) else {
                continue;
            };
            let w = self.state.accounts[fk].wallets[k];
            if w.is_negative() {
                return Err(format!(
                    "insurance fund of {} negative: {}",
                    asset.symbol, w
                ));
            }
        }
        Ok(())
    }

    /// Conservation per asset (MARGIN §10): wallets + isolated margins + fee and interest
    /// income − Σ basis (the uPnL of all positions at any common price; + Σ basis for
    /// inverse) = deposits − withdrawals; and open interest long = short.
    fn check_conservation(&self) -> Result<(), String> {
        let cfg = &self.state.config;
        let mut total: Vec<Money> = (0..cfg.assets.len())
            .map(|k| {
                self.state.fee_income[k]
                    + self.state.interest_income[k]
                    + self.state.conversion_desk[k]
            })
            .collect();
        let mut oi = vec![0i64; cfg.instruments.len()];
        for a in &self.state.accounts {
            for (k, w) in a.wallets.iter().enumerate() {
                total[k] += *w;
            }
            for leg in &a.legs {
                let spec = &cfg.instruments[leg.instrument.0 as usize];
                let k = spec.settle_asset.0 as usize;
                if spec.is_inverse() {
                    total[k] += leg.isolated_margin + leg.basis;
                } else {
                    total[k] += leg.isolated_margin - leg.basis;
                }
                oi[leg.instrument.0 as usize] += leg.qty.0;
            }
        }
        for (k, t) in total.iter().enumerate() {
            let expected = self.state.deposited[k] - self.state.withdrawn[k];
            if *t != expected {
                return Err(format!(
                    "asset {} not conserved: balances {} != deposits − withdrawals {}",
                    cfg.assets[k].symbol, t, expected
                ));
            }
        }
        for (i, q) in oi.iter().enumerate() {
            if *q != 0 {
                return Err(format!(
                    "instrument {} open interest off by {q} lots",
                    cfg.instruments[i].symbol
                ));
            }
        }
        Ok(())
    }

    /// An account's legs: in (instrument, side) order, sides as the position mode says
    /// (`Both` one-way; `Long` ≥ 0 and `Short` ≤ 0 in hedge mode), no basis when flat, no
    /// isolated margin in cross and never a negative one, the account listed in the
    /// holders index exactly when a leg on the instrument is open, and the order sums
    /// equal to their orders'.
    fn check_legs(&self, a: &Account) -> Result<(), String> {
        let mut prev: Option<(InstrumentId, PositionSide)> = None;
        for leg in &a.legs {
            if prev.is_some_and(|p| p >= (leg.instrument, leg.side)) {
                return Err(format!("account {} legs out of order", a.id));
            }
            prev = Some((leg.instrument, leg.side));
            let side_ok = match (a.position_mode, leg.side) {
                (PositionMode::OneWay, PositionSide::Both) => true,
                (PositionMode::Hedge, PositionSide::Long) => leg.qty.0 >= 0,
                (PositionMode::Hedge, PositionSide::Short) => leg.qty.0 <= 0,
                _ => false,
            };
            if !side_ok {
                return Err(format!(
                    "account {} leg {:?} on {} in {:?} mode with {} lots",
                    a.id, leg.side, leg.instrument, a.position_mode, leg.qty.0
                ));
            }
            let spec = &self.state.config.instruments[leg.instrument.0 as usize];
            if leg.qty.is_zero() && !leg.basis.is_zero() {
                return Err(format!("account {} flat leg keeps basis", a.id));
            }
            if leg.mode == MarginMode::Cross && !leg.isolated_margin.is_zero() {
                return Err(format!("account {} cross leg holds isolated margin", a.id));
            }
            // Isolated margin can only be negative transiently (a bug if it stays).
            if leg.isolated_margin.is_negative() {
                return Err(format!("account {} isolated margin negative", a.id));
            }
            let held = self.ix.holders[leg.instrument.0 as usize]
                .binary_search(&a.id)
                .is_ok();
            let open = a.legs_of(leg.instrument).any(|l| !l.qty.is_zero());
            if held != open {
                return Err(format!(
                    "holders index wrong for account {} on {}",
                    a.id, spec.symbol
                ));
            }
            self.check_leg_orders(a, leg, spec)?;
        }
        Ok(())
    }

    /// A leg's reserved order margin and open notional equal the sums over its open
    /// orders, each known, in the book under the same owner, and up to date.
    fn check_leg_orders(
        &self,
        a: &Account,
        leg: &perpcore_risk::Leg,
        spec: &InstrumentSpec,
    ) -> Result<(), String> {
        let mut reserved = Money::ZERO;
        let mut notional = Money::ZERO;
        for id in &leg.open_orders {
            let m = self
                .state
                .orders
                .get(id)
                .ok_or(format!("order {id} on leg but not known"))?;
            if m.account != a.id
                || m.instrument != leg.instrument
                || a.order_side(m.side, m.reduce_only) != leg.side
            {
                return Err(format!("order {id} filed under the wrong leg"));
            }
            let o = self.state.books[leg.instrument.0 as usize]
                .get(*id)
                .ok_or(format!("order {id} not in book"))?;
            if o.account != a.id {
                return Err(format!("order {id} owner differs in book"));
            }
            if m.reserved
                != m.margin_notional
                    .div_int(leg.leverage as i64, Rounding::Ceil)
            {
                return Err(format!("order {id} reservation stale"));
            }
            reserved += m.reserved;
            if m.open_notional != spec.notional(o.open_qty, spec.price_of(o.price)) {
                return Err(format!("order {id} open notional stale"));
            }
            notional += m.open_notional;
        }
        if notional != leg.order_notional {
            return Err(format!(
                "account {} {}: order notional sum stale",
                a.id, spec.symbol
            ));
        }
        if reserved != leg.order_margin {
            return Err(format!(
                "account {} {}: order margin {} != sum of orders {}",
                a.id, spec.symbol, leg.order_margin, reserved
            ));
        }
        Ok(())
    }

    /// Books: not crossed, internally consistent, every order known with matching meta,
    /// and no order known that is not in a book.
    fn check_books(&self) -> Result<(), String> {
        let mut count = 0u64;
        for (i, b) in self.state.books.iter().enumerate() {
            if let (Some(bid), Some(ask)) = (b.best_bid(), b.best_ask()) {
                if bid >= ask {
                    return Err(format!("book {i} crossed: {bid:?} >= {ask:?}"));
                }
            }
            for o in b.iter() {
                let m = self
                    .state
                    .orders
                    .get(&o.order_id)
                    .ok_or(format!("book order {} unknown", o.order_id))?;
                if m.instrument.0 as usize != i || m.side != o.side {
                    return Err(format!("book order {} meta mismatch", o.order_id));
                }
            }
            count += b.orders_count();
            b.check_invariants();
        }
        if count != self.state.orders.len() as u64 {
            return Err(format!(
                "{} orders known, {} in books",
                self.state.orders.len(),
                count
            ));
        }
        Ok(())
    }
}
