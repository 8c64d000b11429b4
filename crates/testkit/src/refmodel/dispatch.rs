//! Coverage detection and the dispatch of one command.

use super::*;

impl RefModel {
    /// Whether `cmd` depends on something the model does not cover. Decided before any
    /// change, on the current state.
    pub fn uncovered(&self, cmd: &Command) -> Option<&'static str> {
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
        if let Some(spec) = instrument.and_then(|i| self.spec(i).ok()) {
            if spec.fee_to_close {
                return Some("fee-to-close convention");
            }
        }
        if let Some((away, _)) = self.away {
            // One account is in a multi-asset or unified mode: only its own switches are
            // covered (nothing else can have changed it since it left).
            match cmd {
                Command::SetAssetMode { account, .. } if *account == away => {}
                _ => return Some("multi-asset or unified account"),
            }
        }
        match cmd {
            Command::SetAssetMode { account, mode } if *mode != AssetMode::Single => {
                let a = self.user(*account).ok()?;
                // Refused, or accepted into a pool without a loan: covered (and then only
                // switches of that account are, until it is back in single-asset mode).
                let from = self.away.map_or(AssetMode::Single, |(_, m)| m);
                if from == *mode || self.check_switch_to_pool(a, *mode).is_err() {
                    return None;
                }
                (!self.loan_free(a, *mode)).then_some("loan in a multi-asset or unified account")
            }
            _ => None,
        }
    }

    /// Apply one command. No timestamp: single-asset accounts accrue no interest, and an
    /// account in a pooled mode is covered only without a loan, so sequenced time (hourly
    /// interest, auto-exchange) does not matter to the covered part.
    pub fn apply(&mut self, cmd: &Command) -> Step {
        if let Some(why) = self.uncovered(cmd) {
            return Step::Uncovered(why);
        }
        let mut out = Vec::new();
        let r = match cmd {
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
        Step::Events(out)
    }
}
