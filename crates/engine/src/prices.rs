//! Prices from the feed: marks (which drive liquidation checks), index prices, funding
//! rates and reference prices, and the mark price band.

use crate::engine::{Engine, Res};
use perpcore_types::*;

pub(crate) fn check_price(price: Price) -> Result<(), RejectReason> {
    if !price.is_positive() {
        return Err(RejectReason::PriceNotPositive);
    }
    if price > MAX_PRICE {
        return Err(RejectReason::PriceTooLarge);
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

/// A mark or index price: in range, and at least one tick (below it no order price exists
/// on the grid, and the band would end at 0).
pub(crate) fn check_on_grid(spec: &InstrumentSpec, price: Price) -> Result<(), RejectReason> {
    check_price(price)?;
    if price < spec.tick_size {
        return Err(RejectReason::PriceBelowTick);
    }
    Ok(())
}

impl Engine {
    pub(crate) fn set_index_price(
        &mut self,
        i: InstrumentId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Res {
        check_on_grid(self.spec(i)?, price)?;
        self.state.market[i.0 as usize].index = Some(price);
        out.push(Event::IndexPriceSet {
            instrument: i,
            price,
        });
        Ok(())
    }

    pub(crate) fn set_funding_rate(
        &mut self,
        i: InstrumentId,
        rate: Rate,
        next_funding_ns: u64,
        out: &mut Vec<Event>,
    ) -> Res {
        if let FundingMethod::Derived { .. } = self.spec(i)?.funding_method {
            return Err(RejectReason::FundingRateDerived);
        }
        if rate < -Rate::ONE || rate > Rate::ONE {
            return Err(RejectReason::RateOutOfRange);
        }
        let m = &mut self.state.market[i.0 as usize];
        m.funding_rate = Some(rate);
        // A funding time already settled is never reopened: Binance's first update after
        // a funding time still names it (with the rate it settled at), and settling it
        // again would charge every position twice.
        if m.last_funding
            .is_none_or(|(_, settled)| next_funding_ns > settled)
        {
            m.next_funding_ns = next_funding_ns;
        }
        self.ix.next_timed_ns = crate::indexes::earliest_timed(&self.state);
        out.push(Event::FundingRateSet {
            instrument: i,
            rate,
            next_funding_ns,
        });
        Ok(())
    }

    pub(crate) fn set_reference_prices(
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
        let m = &mut self.state.market[i.0 as usize];
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

    pub(crate) fn set_mark_price(
        &mut self,
        i: InstrumentId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Res {
        let spec = self.spec(i)?;
        if let MarkMethod::Derived { .. } = spec.mark_method {
            return Err(RejectReason::MarkPriceDerived);
        }
        check_on_grid(spec, price)?;
        self.put_mark(i, price, out);
        Ok(())
    }

    /// Sets a checked mark (recorded or derived): the band, the event, the liquidation
    /// check.
    pub(crate) fn put_mark(&mut self, i: InstrumentId, price: Price, out: &mut Vec<Event>) {
        self.state.marks[i.0 as usize] = Some(price);
        self.ix.bands[i.0 as usize] = band(&self.state.config.instruments[i.0 as usize], price);
        out.push(Event::MarkPriceSet {
            instrument: i,
            price,
        });
        self.check_liquidations(i, out);
        self.price_moved(i, WorkingPrice::Mark);
    }
}
