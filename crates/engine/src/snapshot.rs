//! Canonical state: the state hash, the full invariant check, and snapshots.
//!
//! The canonical encoding is bincode (fixed-width little-endian) of, in order: the
//! configuration, last sequence number and timestamp, the next internal order id, marks,
//! per-asset fee income / deposits / withdrawals, every account in creation order, then
//! per instrument every resting order in the book's canonical order (bids best→worst,
//! asks best→worst, FIFO within a level) with its engine-side meta. Hash-map order never
//! enters it.

use crate::engine::{Engine, OrderMeta};
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

#[derive(Encode, Decode)]
struct State {
    config: Config,
    last_seq: u64,
    last_ts_ns: u64,
    next_internal_order: u64,
    marks: Vec<Option<Price>>,
    market: Vec<crate::engine::MarketData>,
    fee_income: Vec<Money>,
    index_usdt: Vec<Option<Price>>,
    index_usd: Vec<Option<Price>>,
    interest_income: Vec<Money>,
    interest_slot: u64,
    deposited: Vec<Money>,
    withdrawn: Vec<Money>,
    accounts: Vec<Account>,
    books: Vec<Vec<OrderRecord>>,
}

impl Engine {
    fn to_state(&self) -> State {
        State {
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
        }
    }

    /// The canonical encoding of all state (also the snapshot format).
    pub fn snapshot(&self) -> Vec<u8> {
        bincode::encode_to_vec(self.to_state(), bincode_config()).expect("encode state")
    }

    /// blake3 over the canonical encoding.
    pub fn state_hash(&self) -> [u8; 32] {
        *blake3::hash(&self.snapshot()).as_bytes()
    }

    /// Hash of everything but the sequence number and timestamp: two states with equal
    /// content hashes differ only in how many commands they have seen. Tests use it to
    /// prove a rejected command changed nothing.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut s = self.to_state();
        s.last_seq = 0;
        s.last_ts_ns = 0;
        *blake3::hash(&bincode::encode_to_vec(s, bincode_config()).expect("encode state"))
            .as_bytes()
    }

    pub fn state_hash_hex(&self) -> String {
        self.state_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Rebuild an engine from `snapshot()` bytes. Refuses trailing bytes and any state
    /// that fails `check_invariants`.
    pub fn restore(bytes: &[u8]) -> Result<Engine, String> {
        let (s, used): (State, usize) = bincode::decode_from_slice(bytes, bincode_config())
            .map_err(|e| format!("snapshot decode: {e}"))?;
        if used != bytes.len() {
            return Err(format!(
                "snapshot has {} trailing bytes",
                bytes.len() - used
            ));
        }
        let mut e = Engine::new(s.config);
        if s.marks.len() != e.marks.len()
            || s.books.len() != e.books.len()
            || s.fee_income.len() != e.fee_income.len()
        {
            return Err("snapshot does not match its configuration".into());
        }
        e.last_seq = s.last_seq;
        e.last_ts_ns = s.last_ts_ns;
        e.next_internal_order = s.next_internal_order;
        e.marks = s.marks;
        if s.market.len() != e.market.len() {
            return Err("snapshot market data does not match its configuration".into());
        }
        e.market = s.market;
        for (i, m) in e.marks.iter().enumerate() {
            if let Some(m) = m {
                if !m.is_positive() || *m > MAX_PRICE {
                    return Err(format!("snapshot mark {i} out of range"));
                }
                e.bands[i] = crate::engine::band(&e.config.instruments[i], *m);
            }
        }
        e.fee_income = s.fee_income;
        if [
            s.index_usdt.len(),
            s.index_usd.len(),
            s.interest_income.len(),
        ] != [e.fee_income.len(); 3]
        {
            return Err("snapshot asset tables do not match its configuration".into());
        }
        e.index_usdt = s.index_usdt;
        e.index_usd = s.index_usd;
        e.interest_income = s.interest_income;
        e.interest_slot = s.interest_slot;
        e.refresh_usd_prices();
        e.deposited = s.deposited;
        e.withdrawn = s.withdrawn;
        e.accounts.clear();
        e.account_index.clear();
        for a in s.accounts {
            if e.idx(a.id).is_some() {
                return Err(format!("account {} twice in snapshot", a.id));
            }
            for leg in &a.legs {
                if leg.instrument.0 as usize >= e.holders.len() {
                    return Err("leg on unknown instrument".into());
                }
                if !leg.qty.is_zero() {
                    e.holders[leg.instrument.0 as usize].push(a.id);
                }
            }
            e.insert_account(a);
        }
        for h in &mut e.holders {
            h.sort();
        }
        let mut res = MatchResult::new();
        for (i, orders) in s.books.into_iter().enumerate() {
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
                    .map_err(|e| format!("snapshot book: {e}"))?;
                if res.outcome
                    != (TakerOutcome::Rested {
                        open_qty: o.open_qty,
                    })
                {
                    return Err(format!("snapshot order {} crosses the book", o.order_id));
                }
                if e.orders.insert(o.order_id, o.meta).is_some() {
                    return Err(format!("order {} twice in snapshot", o.order_id));
                }
            }
            e.books[i] = book;
        }
        e.rebuild_liq_index();
        e.check_invariants()?;
        Ok(e)
    }

    /// Every invariant of MARGIN §10 and the book/order bookkeeping. Cheap enough to run
    /// after every command in tests; returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let assets = self.config.assets.len();
        // Conservation per asset: wallets + isolated margins + fee income − Σ basis
        // (uPnL of all positions at any common price) = deposits − withdrawals.
        let mut total = vec![Money::ZERO; assets];
        for (k, t) in total.iter_mut().enumerate() {
            *t = self.fee_income[k] + self.interest_income[k];
        }
        let mut oi = vec![0i64; self.config.instruments.len()];
        for a in &self.accounts {
            for (k, w) in a.wallets.iter().enumerate() {
                total[k] += *w;
            }
            let mut prev: Option<InstrumentId> = None;
            for leg in &a.legs {
                if prev.is_some_and(|p| p >= leg.instrument) {
                    return Err(format!("account {} legs out of order", a.id));
                }
                prev = Some(leg.instrument);
                let spec = &self.config.instruments[leg.instrument.0 as usize];
                let k = spec.settle_asset.0 as usize;
                // uPnL at a common price sums to −Σ basis (linear) or +Σ basis (inverse).
                if spec.is_inverse() {
                    total[k] += leg.isolated_margin + leg.basis;
                } else {
                    total[k] += leg.isolated_margin - leg.basis;
                }
                oi[leg.instrument.0 as usize] += leg.qty.0;
                if leg.qty.is_zero() && !leg.basis.is_zero() {
                    return Err(format!("account {} flat leg keeps basis", a.id));
                }
                if leg.mode == MarginMode::Cross && !leg.isolated_margin.is_zero() {
                    return Err(format!("account {} cross leg holds isolated margin", a.id));
                }
                let held = self.holders[leg.instrument.0 as usize]
                    .binary_search(&a.id)
                    .is_ok();
                if held == leg.qty.is_zero() {
                    return Err(format!(
                        "holders index wrong for account {} on {}",
                        a.id, spec.symbol
                    ));
                }
                // Reserved order margin equals the sum over the leg's open orders.
                let mut reserved = Money::ZERO;
                let mut notional = Money::ZERO;
                for id in &leg.open_orders {
                    let m = self
                        .orders
                        .get(id)
                        .ok_or(format!("order {id} on leg but not known"))?;
                    if m.account != a.id || m.instrument != leg.instrument {
                        return Err(format!("order {id} filed under the wrong leg"));
                    }
                    let o = self.books[leg.instrument.0 as usize]
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
            }
        }
        for (k, t) in total.iter().enumerate() {
            let expected = self.deposited[k] - self.withdrawn[k];
            if *t != expected {
                return Err(format!(
                    "asset {} not conserved: balances {} != deposits − withdrawals {}",
                    self.config.assets[k].symbol, t, expected
                ));
            }
        }
        // Open interest long = short.
        for (i, q) in oi.iter().enumerate() {
            if *q != 0 {
                return Err(format!(
                    "instrument {} open interest off by {q} lots",
                    self.config.instruments[i].symbol
                ));
            }
        }
        // Books: not crossed, internally consistent, every order known.
        let mut count = 0u64;
        for (i, b) in self.books.iter().enumerate() {
            if let (Some(bid), Some(ask)) = (b.best_bid(), b.best_ask()) {
                if bid >= ask {
                    return Err(format!("book {i} crossed: {bid:?} >= {ask:?}"));
                }
            }
            for o in b.iter() {
                let m = self
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
        if count != self.orders.len() as u64 {
            return Err(format!(
                "{} orders known, {} in books",
                self.orders.len(),
                count
            ));
        }
        // Isolated margin can only be negative transiently (a bug if it stays).
        for a in &self.accounts {
            for leg in &a.legs {
                if leg.isolated_margin.is_negative() {
                    return Err(format!("account {} isolated margin negative", a.id));
                }
            }
        }
        Ok(())
    }
}
