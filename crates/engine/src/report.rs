//! The account report (scenario `report` command, `perpcore audit`): everything a user or
//! auditor needs to check an account's margin by hand. Read-only.

use crate::engine::Engine;
use perpcore_risk::UsdPool;
use perpcore_risk::{self as risk};
use perpcore_types::*;
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AssetReport {
    pub asset: String,
    pub wallet: Money,
    /// Wallet + uPnL of cross positions settling in this asset.
    pub margin_balance: Money,
    /// Wallet + uPnL of all positions + isolated margins (what the asset is worth to
    /// the account now).
    pub equity: Money,
    pub initial_margin: Money,
    pub order_margin: Money,
    pub maintenance_margin: Money,
    /// `MM / margin balance` of the cross pool; absent with no cross position.
    pub margin_ratio: Option<Rate>,
    pub available: Money,
    pub withdrawable: Money,
    /// A negative equity is a loan of this asset (MARGIN §8), interest included.
    pub loan: Money,
    /// Interest charged and not yet repaid (part of `loan` when it is still owed).
    pub accrued_interest: Money,
    /// USD value of the equity (absent without a USD price).
    pub usd_value: Option<Money>,
    /// Its value as collateral after the tiered haircut (liabilities at 100%).
    pub collateral_value: Option<Money>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PositionReport {
    pub instrument: String,
    /// `both` for a one-way account; `long` or `short` in hedge mode.
    pub position_side: PositionSide,
    pub mode: MarginMode,
    pub leverage: u32,
    pub size: Qty,
    pub entry_price: Option<Price>,
    pub mark_price: Option<Price>,
    pub notional: Money,
    pub unrealized_pnl: Money,
    pub isolated_margin: Money,
    pub initial_margin: Money,
    pub maintenance_margin: Money,
    pub liquidation_price: Option<Price>,
    pub bankruptcy_price: Option<Price>,
    /// The two prices on the tick grid, as exchanges display them: a long's rounded up
    /// and a short's down, so the displayed price is reached no later than the exact one.
    pub liquidation_price_tick: Option<Price>,
    pub bankruptcy_price_tick: Option<Price>,
    /// The bracket of the position's notional at mark: its maintenance margin rate, its
    /// maintenance amount (`cum`) and the leverage it allows.
    pub bracket_mmr: Option<Rate>,
    pub bracket_cum: Option<Money>,
    pub bracket_max_leverage: Option<u32>,
    /// Isolated: maintenance margin / (isolated margin + uPnL), rounded up; `None` for a
    /// cross position (its pool's ratio is in the asset report).
    pub isolated_margin_ratio: Option<Rate>,
    pub order_margin: Money,
    pub open_orders: u32,
    /// Funding paid (positive) or received since the position opened.
    pub funding: Money,
    /// The instrument's next funding time, the rate it would settle at now (the feed's
    /// announced rate, or the rate of the premium samples so far when derived), and the
    /// rate of the last funding time settled.
    pub next_funding_ns: Option<u64>,
    pub predicted_funding_rate: Option<Rate>,
    pub last_funding_rate: Option<Rate>,
    /// The position's ADL quantile, 1–5 as exchanges display it (5: the first fifth of
    /// its side's auto-deleveraging queue); `None` when flat or without a mark.
    pub adl_quantile: Option<u8>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccountReport {
    pub account: AccountId,
    pub parent: Option<AccountId>,
    pub asset_mode: AssetMode,
    pub assets: Vec<AssetReport>,
    pub positions: Vec<PositionReport>,
    /// Multi-asset mode and the unified account: the USD pool.
    pub usd_pool: Option<UsdPoolReport>,
}

/// The USD pool of a multi-asset or unified account (MARGIN §4, §5), all in USD.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UsdPoolReport {
    /// `AE = Σ haircut(Eq_k × usd(k))`, liabilities at 100%.
    pub adjusted_equity: Money,
    pub initial_margin: Money,
    pub order_margin: Money,
    pub maintenance_margin: Money,
    /// `MM / AE`; absent with no position.
    pub margin_ratio: Option<Rate>,
    pub available: Money,
}

impl Engine {
    pub fn report(&self, id: AccountId) -> Option<AccountReport> {
        let k = self.idx(id)?;
        let a = &self.state.accounts[k];
        let up: Option<UsdPool> = (a.asset_mode != AssetMode::Single).then(|| self.usd_pool_of(k));
        let assets = self.asset_reports(k, up.as_ref());
        let positions = a
            .legs
            .iter()
            .filter_map(|leg| self.position_report(k, leg))
            .collect();
        let usd_pool = up.map(|u| UsdPoolReport {
            adjusted_equity: u.adjusted_equity,
            initial_margin: u.im,
            order_margin: u.order_margin,
            maintenance_margin: u.mm,
            margin_ratio: (!u.mm.is_zero()).then(|| {
                if u.adjusted_equity.is_positive() {
                    Rate::ratio(u.mm, u.adjusted_equity, Rounding::Ceil).unwrap_or(Rate(i64::MAX))
                } else {
                    Rate(i64::MAX)
                }
            }),
            available: u.available(),
        });
        Some(AccountReport {
            account: id,
            parent: a.parent,
            asset_mode: a.asset_mode,
            assets,
            positions,
            usd_pool,
        })
    }

    /// One line per asset the account holds or settles a position in.
    fn asset_reports(&self, k: usize, up: Option<&UsdPool>) -> Vec<AssetReport> {
        let a = &self.state.accounts[k];
        let specs = &self.state.config.instruments;
        let usd = self.usd_prices();
        let mut assets = Vec::new();
        for asset in &self.state.config.assets {
            let p = self.pool_of(k, asset.id);
            let touched = a
                .legs
                .iter()
                .any(|l| specs[l.instrument.0 as usize].settle_asset == asset.id);
            if p.wallet.is_zero() && !touched {
                continue;
            }
            let mut equity = p.wallet;
            for leg in &a.legs {
                let spec = &specs[leg.instrument.0 as usize];
                if spec.settle_asset == asset.id && !leg.is_flat() {
                    let m = self.state.marks[leg.instrument.0 as usize].expect("mark");
                    equity += risk::upnl(leg, spec, m) + leg.isolated_margin;
                } else if spec.settle_asset == asset.id {
                    equity += leg.isolated_margin;
                }
            }
            assets.push(AssetReport {
                asset: asset.symbol.clone(),
                wallet: p.wallet,
                margin_balance: p.margin_balance(),
                equity,
                initial_margin: p.cross_im,
                order_margin: p.order_margin,
                maintenance_margin: p.cross_mm,
                margin_ratio: p.mmr(),
                available: p.available(),
                withdrawable: p.withdrawable(),
                loan: (-up
                    .map(|u| u.equity[asset.id.0 as usize])
                    .unwrap_or(p.wallet))
                .max(Money::ZERO),
                accrued_interest: a.interest_owed[asset.id.0 as usize],
                usd_value: usd[asset.id.0 as usize].map(|price| risk::usd_value(equity, price)),
                collateral_value: up
                    .map(|u| u.collateral_usd[asset.id.0 as usize])
                    .or_else(|| {
                        risk::collateral_usd(
                            equity,
                            asset.collateral.as_ref(),
                            usd[asset.id.0 as usize],
                        )
                    }),
            });
        }
        assets
    }

    /// A position (or a flat leg with open orders): its valuation at the mark and its
    /// liquidation and bankruptcy prices. `None` for a flat leg with no orders.
    fn position_report(&self, k: usize, leg: &risk::Leg) -> Option<PositionReport> {
        let specs = &self.state.config.instruments;
        let spec = &specs[leg.instrument.0 as usize];
        let market = &self.state.market[leg.instrument.0 as usize];
        if leg.is_flat() && leg.open_orders.is_empty() {
            return None;
        }
        let mark = self.state.marks[leg.instrument.0 as usize];
        let (upnl, im, mm, notional, lp, bp) = self.valuation(k, leg, spec, mark);
        let long = leg.qty.0 > 0;
        let on_tick = |p: Option<Price>| {
            p.and_then(|p| {
                let r = if long {
                    Rounding::Ceil
                } else {
                    Rounding::Floor
                };
                let t = spec.ticks_of(p, r);
                t.0.checked_mul(spec.tick_size.raw()).map(Price)
            })
        };
        // The bracket the maintenance margin is reckoned in (by the convention's value).
        let bracket = mark
            .filter(|_| !leg.is_flat())
            .map(|m| spec.bracket_for(risk::mm_notional(leg, spec, m)));
        let isolated_margin_ratio =
            (leg.mode == MarginMode::Isolated && !leg.is_flat()).then(|| {
                let equity = leg.isolated_margin + upnl;
                if equity.is_positive() {
                    Rate::ratio(mm, equity, Rounding::Ceil).unwrap_or(Rate(i64::MAX))
                } else {
                    Rate(i64::MAX)
                }
            });
        Some(PositionReport {
            instrument: spec.symbol.clone(),
            position_side: leg.side,
            mode: leg.mode,
            leverage: leg.leverage,
            size: spec.qty_of(leg.qty),
            entry_price: leg.entry_price(spec),
            mark_price: mark,
            notional,
            unrealized_pnl: upnl,
            isolated_margin: leg.isolated_margin,
            initial_margin: im,
            maintenance_margin: mm,
            liquidation_price: lp,
            bankruptcy_price: bp,
            liquidation_price_tick: on_tick(lp),
            bankruptcy_price_tick: on_tick(bp),
            bracket_mmr: bracket.map(|b| b.mmr),
            bracket_cum: bracket.map(|b| b.cum),
            bracket_max_leverage: bracket.map(|b| b.max_leverage),
            isolated_margin_ratio,
            order_margin: leg.order_margin,
            open_orders: u32::try_from(leg.open_orders.len()).unwrap_or(u32::MAX),
            funding: leg.funding,
            next_funding_ns: Some(market.next_funding_ns).filter(|t| *t > 0),
            predicted_funding_rate: market.funding_rate,
            last_funding_rate: market.last_funding.map(|(r, _)| r),
            adl_quantile: self.adl_quantile(k, spec, leg.side),
        })
    }

    /// A position's uPnL, IM, MM, notional, liquidation and bankruptcy prices at `mark`
    /// (zeros and `None` for a flat leg or without a mark).
    #[allow(clippy::type_complexity)]
    fn valuation(
        &self,
        k: usize,
        leg: &risk::Leg,
        spec: &InstrumentSpec,
        mark: Option<Price>,
    ) -> (Money, Money, Money, Money, Option<Price>, Option<Price>) {
        let a = &self.state.accounts[k];
        match mark {
            Some(m) if !leg.is_flat() => {
                let upnl = risk::upnl(leg, spec, m);
                let pooled = leg.mode == MarginMode::Cross && risk::is_pooled(a.asset_mode, spec);
                // A hedge account's two cross legs both move with the mark.
                let paired = !pooled && self.hedged_cross_pair(k, leg);
                let (wb_others, wb_upnl_others) = if leg.mode == MarginMode::Isolated || pooled {
                    (leg.isolated_margin, leg.isolated_margin)
                } else {
                    let p = self.pool_of(k, spec.settle_asset);
                    let mm = risk::position_mm(leg, spec, m);
                    let others_upnl_wb = p.margin_balance() - upnl;
                    (others_upnl_wb - (p.cross_mm - mm), others_upnl_wb)
                };
                (
                    upnl,
                    risk::position_im(leg, spec, m),
                    risk::position_mm(leg, spec, m),
                    spec.notional(leg.qty, m),
                    if pooled {
                        // USD pool: the engine's own check (`is_liquidatable`) searched
                        // over the pool (MARGIN §6); the first healthy price's neighbour
                        // on the unhealthy side is the first one that liquidates.
                        let step = if leg.qty.0 > 0 { -1 } else { 1 };
                        self.usd_pool_root(k, (spec, leg.side), |p| !p.is_liquidatable())
                            .map(|h| Price(h.raw() + step))
                            .filter(|p| p.is_positive())
                    } else if paired {
                        // The same search over the single-asset pool's own check; the
                        // step is the net position's side.
                        let net: i64 = a.legs_of(spec.id).map(|l| l.qty.0).sum();
                        let step = if net > 0 || (net == 0 && leg.qty.0 > 0) {
                            -1
                        } else {
                            1
                        };
                        self.cross_pool_root(k, (spec, leg.side), |p| !p.is_liquidatable())
                            .map(|h| Price(h.raw() + step))
                            .filter(|p| p.is_positive())
                    } else {
                        risk::liquidation_price(leg, spec, wb_others, m)
                    },
                    if pooled {
                        self.usd_pool_root(k, (spec, leg.side), |p| {
                            !p.adjusted_equity.is_negative()
                        })
                    } else if paired {
                        self.cross_pool_root(k, (spec, leg.side), |p| {
                            !p.margin_balance().is_negative()
                        })
                    } else {
                        risk::bankruptcy_price(leg, spec, wb_upnl_others)
                    },
                )
            }
            _ => (
                Money::ZERO,
                Money::ZERO,
                Money::ZERO,
                Money::ZERO,
                None,
                None,
            ),
        }
    }

    /// What an order would cost, without placing it (an order-cost preview): every check
    /// of a new order on the current state, and if it passes, the price it would be
    /// limited at, its size, the notional its margin is reckoned on and the initial margin
    /// it would reserve. Changes nothing.
    pub fn preview_order(&self, o: &NewOrder) -> Result<OrderPreview, RejectReason> {
        let k = self.user_idx(o.account)?;
        let p = self.prepare_order(k, o, None)?;
        let spec = &self.state.config.instruments[p.instrument.0 as usize];
        Ok(OrderPreview {
            limit: spec.price_of(p.taker.limit),
            qty: spec.qty_of(p.taker.qty),
            margin_notional: p.meta.margin_notional,
            initial_margin: p.meta.reserved,
        })
    }
}

/// The answer of [`Engine::preview_order`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OrderPreview {
    pub limit: Price,
    pub qty: Qty,
    pub margin_notional: Money,
    pub initial_margin: Money,
}
