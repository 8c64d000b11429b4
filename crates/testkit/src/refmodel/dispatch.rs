//! Coverage detection and the dispatch of one command.

use super::*;

impl RefModel {
    /// Whether `cmd` depends on something the model does not cover. Decided before any
    /// change, on the current state.
    pub fn uncovered(&self, cmd: &Command) -> Option<&'static str> {
        if let Command::PlaceConditional(_) = cmd {
            return Some("conditional orders");
        }
        match cmd {
            Command::SetPositionMode { .. } => return Some("hedge mode"),
            Command::AdjustIsolatedMargin { position_side, .. }
                if *position_side != PositionSide::Both =>
            {
                return Some("hedge mode")
            }
            _ => {}
        }
        let instrument = match cmd {
            Command::SetLeverage { instrument, .. }
            | Command::SetMarginMode { instrument, .. }
            | Command::AdjustIsolatedMargin { instrument, .. }
            | Command::SetMarkPrice { instrument, .. }
            | Command::SetIndexPrice { instrument, .. }
            | Command::SetFundingRate { instrument, .. }
            | Command::SetReferencePrices { instrument, .. } => Some(*instrument),
            Command::PlaceOrder(o) => Some(o.instrument),
            Command::CancelAll { instrument, .. } => *instrument,
            _ => None,
        };
        let spec = instrument.and_then(|i| self.spec(i).ok());
        if spec.as_ref().is_some_and(|s| s.fee_to_close) {
            return Some("fee-to-close convention");
        }
        if spec
            .as_ref()
            .is_some_and(|s| s.convention != MarginConvention::Binance)
        {
            return Some("bybit convention");
        }
        None
    }

    /// Apply one command at sequenced time `ts_ns` (non-decreasing), if the model covers
    /// it ([`RefModel::uncovered`]); nothing changes otherwise.
    pub fn apply(&mut self, ts_ns: u64, cmd: &Command) -> Step {
        if let Some(why) = self.uncovered(cmd) {
            return Step::Uncovered(why);
        }
        let mut out = Vec::new();
        // Time passing is itself an input: hour boundaries charge interest first.
        self.accrue_interest(ts_ns, &mut out);
        self.dispatch(cmd, &mut out);
        Step::Events(out)
    }

    /// The command's handler: its events, or its rejection, after `out`'s.
    fn dispatch(&mut self, cmd: &Command, events: &mut Vec<Event>) {
        let mut out = Vec::new();
        let r = match cmd {
            Command::PlaceConditional(_) | Command::SetPositionMode { .. } => {
                unreachable!("uncovered: conditional orders, hedge mode")
            }
            Command::CreateAccount { account, parent } => {
                self.create_account(*account, *parent, &mut out)
            }
            Command::Deposit {
                account,
                asset,
                amount,
            } => self.deposit(*account, *asset, *amount, &mut out),
            Command::Withdraw {
                account,
                asset,
                amount,
            } => self.withdraw(*account, *asset, *amount, &mut out),
            Command::Transfer {
                from,
                to,
                asset,
                amount,
            } => self.transfer(*from, *to, *asset, *amount, &mut out),
            Command::SetLeverage {
                account,
                instrument,
                leverage,
            } => self.set_leverage(*account, *instrument, *leverage, &mut out),
            Command::SetMarginMode {
                account,
                instrument,
                mode,
            } => self.set_margin_mode(*account, *instrument, *mode, &mut out),
            Command::AdjustIsolatedMargin {
                account,
                instrument,
                delta,
                ..
            } => self.adjust_isolated_margin(*account, *instrument, *delta, &mut out),
            Command::PlaceOrder(o) => self.place_order(o, &mut out),
            Command::CancelOrder { account, order_id } => {
                self.cancel_order(*account, *order_id, &mut out)
            }
            Command::CancelAll {
                account,
                instrument,
            } => self.cancel_all(*account, *instrument, &mut out),
            Command::AmendOrder {
                account,
                order_id,
                price,
                qty,
            } => self.amend_order(*account, *order_id, *price, *qty, &mut out),
            Command::SetMarkPrice { instrument, price } => {
                self.set_mark_price(*instrument, *price, &mut out)
            }
            Command::SetIndexPrice { instrument, price } => {
                let tick = self.spec(*instrument).map(|s| s.tick_size);
                tick.and_then(|tick| {
                    check_price(*price)?;
                    if *price < tick {
                        return Err(RejectReason::PriceBelowTick);
                    }
                    out.push(Event::IndexPriceSet {
                        instrument: *instrument,
                        price: *price,
                    });
                    Ok(())
                })
            }
            Command::SetFundingRate {
                instrument,
                rate,
                next_funding_ns,
            } => self.spec(*instrument).and_then(|_| {
                if *rate < -Rate::ONE || *rate > Rate::ONE {
                    return Err(RejectReason::RateOutOfRange);
                }
                out.push(Event::FundingRateSet {
                    instrument: *instrument,
                    rate: *rate,
                    next_funding_ns: *next_funding_ns,
                });
                Ok(())
            }),
            Command::SetReferencePrices {
                instrument,
                best_bid,
                best_ask,
                last_trade,
            } => self.spec(*instrument).and_then(|_| {
                for p in [best_bid, best_ask, last_trade].into_iter().flatten() {
                    check_price(*p)?;
                }
                let (b0, a0) = self.reference[instrument.0 as usize];
                let (b, a) = (best_bid.or(b0), best_ask.or(a0));
                if let (Some(b), Some(a)) = (b, a) {
                    if b >= a {
                        return Err(RejectReason::CrossedReferencePrices);
                    }
                }
                self.reference[instrument.0 as usize] = (b, a);
                out.push(Event::ReferencePricesSet {
                    instrument: *instrument,
                    best_bid: *best_bid,
                    best_ask: *best_ask,
                    last_trade: *last_trade,
                });
                Ok(())
            }),
            Command::SetAssetMode { account, mode } => {
                self.set_asset_mode(*account, *mode, &mut out)
            }
            Command::SetAssetIndex {
                asset,
                quote,
                price,
            } => self.set_asset_index(*asset, *quote, *price, &mut out),
        };
        if let Err(reason) = r {
            assert!(out.is_empty(), "model: a rejection after events: {out:?}");
            out.push(Event::rejected(reason));
        }
        events.extend(out);
    }
}
