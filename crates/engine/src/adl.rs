//! Auto-deleveraging (MARGIN §7 step 4) and the ADL quantile of the report.
//!
//! After a takeover (MARGIN §7 step 3) the fund has offered the position to the book no
//! worse than its bankruptcy price (the surplus of better fills is the fund's). What it
//! still holds of the takeover, when it cannot carry it (`deleverage_takeover`: its
//! balance, or its balance + its uPnL in the instrument at the mark, is negative), is
//! closed against the opposite positions in ADL order, each at the bankrupt position's
//! bankruptcy price, without fee; the counterparty's open orders in that instrument are
//! cancelled first. One `AutoDeleveraged` event per counterparty. A fund whose balance a
//! position it carries made negative (a funding payment, a work-off below its average
//! entry) is deleveraged the same way (`check_fund`).
//!
//! The ranking is Binance's published one ("What Is Auto-Deleveraging (ADL) and How Does
//! It Work", https://www.binance.com/en/support/faq/360033525471):
//!
//! - `PnL% = (mark value − entry value) / abs(entry value)` = uPnL / |cost basis|;
//! - `effective leverage = abs(mark value) / (mark value − bankruptcy value)` =
//!   notional at mark / the position's equity (its margin balance: the isolated margin
//!   plus uPnL, or the cross pool's wallet plus uPnL; a USD pool's adjusted equity in
//!   the settlement asset), since equity is zero at the bankruptcy price;
//! - `ranking = PnL% × effective leverage` when PnL% ≥ 0, `PnL% / effective leverage`
//!   when PnL% < 0; every profitable position ranks before every losing one, higher
//!   ranking first, ties by ascending account id.
//!
//! The ranking is computed exactly in 256-bit integers as a ratio at 10^-12 (floor); a
//! position whose equity is zero or negative has an infinite effective leverage: first
//! among the profitable, `0` (just ahead of the other losing positions) when losing. The
//! insurance funds (system accounts) are never counterparties.
//!
//! The quantile (1–5) is the position's place in its side's queue as Binance's API and
//! UI show it (`GET /fapi/v1/adlQuantile`, scores 0–4 there; 1–5 lights on screen): with
//! the `n` positions of that side (the funds excluded) ordered from the last to be
//! deleveraged to the first, the `j`-th (1-based) has quantile `ceil(5 × j / n)`, so the
//! first fifth of the queue shows 5.

use crate::engine::{fund_account_id, Engine};
use ethnum::I256;
use perpcore_risk::{self as risk};
use perpcore_types::*;

/// Resolution of the ranking ratio.
const RANK_SCALE: i128 = 1_000_000_000_000;

/// A position's place in the ADL queue: compared as (profitable, ranking), the larger
/// deleveraged first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AdlRank {
    pub profitable: bool,
    /// The ranking at 10^-12, saturated at the `i128` range.
    pub ranking: i128,
}

/// `floor(a × b × RANK_SCALE / (c × d))` for `c, d > 0`, saturated.
fn ratio(a: i128, b: i128, c: i128, d: i128) -> i128 {
    debug_assert!(c > 0 && d > 0);
    let n = I256::from(a) * I256::from(b) * I256::from(RANK_SCALE);
    let den = I256::from(c) * I256::from(d);
    let (q, r) = (n / den, n % den);
    let q = if r != 0 && n < 0 { q - 1 } else { q };
    if q > I256::from(i128::MAX) {
        i128::MAX
    } else if q < I256::from(i128::MIN) {
        i128::MIN
    } else {
        q.as_i128()
    }
}

/// Binance's ranking (module doc) from a position's uPnL, |cost basis|, notional at mark
/// and equity, all in the settlement asset.
pub(crate) fn adl_rank(upnl: Money, entry: Money, notional: Money, equity: Money) -> AdlRank {
    let entry = entry.raw().abs().max(1);
    let notional = notional.raw().abs().max(1);
    let u = upnl.raw();
    let e = equity.raw();
    if u >= 0 {
        let ranking = if u == 0 {
            0
        } else if e <= 0 {
            i128::MAX
        } else {
            // PnL% × leverage = (u / entry) × (notional / e).
            ratio(u, notional, entry, e)
        };
        AdlRank {
            profitable: true,
            ranking,
        }
    } else {
        let ranking = if e <= 0 {
            0
        } else {
            // PnL% / leverage = (u / entry) × (e / notional).
            ratio(u, e, entry, notional)
        };
        AdlRank {
            profitable: false,
            ranking,
        }
    }
}

impl Engine {
    /// The equity carrying a position at the current marks, in its settlement asset:
    /// `mark value − bankruptcy value` (MARGIN §6): the isolated margin + uPnL, the
    /// single-asset pool's margin balance, or the USD pool's adjusted equity converted at
    /// the settlement asset's USD price (zero without one).
    pub(crate) fn position_equity(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
    ) -> Money {
        let leg = self.state.accounts[k].leg(spec.id, side).expect("leg");
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        let pooled = risk::is_pooled(self.state.accounts[k].asset_mode, spec);
        if pooled && leg.mode == MarginMode::Cross {
            let ae = self.usd_pool_of(k).adjusted_equity;
            match self.usd_prices()[spec.settle_asset.0 as usize] {
                Some(p) if p.is_positive() => Money(mul_div(
                    ae.raw(),
                    INDEX_PRICE_SCALE,
                    p.raw(),
                    Rounding::Floor,
                )),
                _ => Money::ZERO,
            }
        } else {
            self.equity_besides(k, spec, side) + risk::upnl(leg, spec, mark)
        }
    }

    /// The ADL rank of account `k`'s open position (leg `side`) in `spec` at the current
    /// mark.
    pub(crate) fn position_adl_rank(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
    ) -> AdlRank {
        let leg = self.state.accounts[k].leg(spec.id, side).expect("leg");
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        adl_rank(
            risk::upnl(leg, spec, mark),
            leg.basis,
            spec.notional(leg.qty, mark),
            self.position_equity(k, spec, side),
        )
    }

    /// The positions on one side of `spec` (long when `long`; a hedge account's leg on
    /// that side), the funds excluded, in ADL order: first to be deleveraged first.
    fn adl_queue(&self, spec: &InstrumentSpec, long: bool) -> Vec<(usize, PositionSide, AdlRank)> {
        let mut queue: Vec<(usize, PositionSide, AdlRank)> = self.ix.holders[spec.id.0 as usize]
            .iter()
            .filter_map(|id| {
                let k = self.idx(*id)?;
                let a = &self.state.accounts[k];
                if a.system {
                    return None;
                }
                let leg = a
                    .legs_of(spec.id)
                    .find(|l| l.qty.0 != 0 && (l.qty.0 > 0) == long)?;
                Some((k, leg.side, self.position_adl_rank(k, spec, leg.side)))
            })
            .collect();
        // Holders are in ascending account id: a stable sort keeps ties in id order.
        queue.sort_by_key(|x| std::cmp::Reverse(x.2));
        queue
    }

    /// The ADL quantile (1–5) of account `k`'s position in `spec`; `None` when flat,
    /// without a mark, or for a fund.
    pub(crate) fn adl_quantile(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
    ) -> Option<u8> {
        let a = &self.state.accounts[k];
        let q = a.leg(spec.id, side)?.qty.0;
        if a.system || q == 0 || self.state.marks[spec.id.0 as usize].is_none() {
            return None;
        }
        let queue = self.adl_queue(spec, q > 0);
        let n = queue.len();
        let pos = queue.iter().position(|(x, s, _)| *x == k && *s == side)?;
        // `j`: 1 for the last to be deleveraged, `n` for the first.
        let j = n - pos;
        let quantile = (5 * j).div_ceil(n);
        debug_assert!((1..=5).contains(&quantile));
        u8::try_from(quantile).ok()
    }

    /// MARGIN §7 step 4 after the takeover of `lots` from `liquidated` on the fund's
    /// `side` at `bp` and the fund's work-off: the part of the takeover the fund still
    /// holds is auto-deleveraged when the fund's balance, or its balance + uPnL in the
    /// instrument at the mark, is negative.
    pub(crate) fn deleverage_takeover(
        &mut self,
        liquidated: AccountId,
        spec: &InstrumentSpec,
        side: Side,
        lots: QtyLots,
        bp: Price,
        out: &mut Vec<Event>,
    ) {
        let settle = spec.settle_asset.0 as usize;
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        let fk = self.idx(fund_account_id(spec.settle_asset)).expect("fund");
        let fund = &self.state.accounts[fk];
        let Some(leg) = fund.leg(spec.id, PositionSide::Both) else {
            return;
        };
        let held = if side == Side::Buy {
            leg.qty.0
        } else {
            -leg.qty.0
        };
        let keep = held.max(0).min(lots.0);
        let wallet = fund.wallets[settle];
        if keep == 0
            || (!wallet.is_negative() && !(wallet + risk::upnl(leg, spec, mark)).is_negative())
        {
            return;
        }
        let left = self.auto_deleverage(fk, liquidated, spec, QtyLots(keep), bp, out);
        assert!(
            left.is_zero(),
            "the opposite side of a fund's position is other accounts'"
        );
    }

    /// Close `lots` of the fund `fk`'s position in `spec` (taken over from `liquidated`)
    /// against the opposite positions in ADL order at `price`. Returns the lots no
    /// counterparty could take (none: the opposite side is other accounts').
    pub(crate) fn auto_deleverage(
        &mut self,
        k: usize,
        liquidated: AccountId,
        spec: &InstrumentSpec,
        lots: QtyLots,
        price: Price,
        out: &mut Vec<Event>,
    ) -> QtyLots {
        let bp = price;
        let settle = spec.settle_asset.0 as usize;
        // `k` is an insurance fund: a one-way account.
        let leg = self.state.accounts[k]
            .leg(spec.id, PositionSide::Both)
            .expect("leg");
        let q = leg.qty.0;
        assert!(
            lots.0 > 0 && lots.0 <= q.abs(),
            "deleveraging more than the position"
        );
        let before = q;
        let close_side = if q > 0 { Side::Sell } else { Side::Buy };
        // What closing `lots` in one fill would pay the account: the fills below are one
        // per counterparty, each value rounded once (the same for both sides), so their
        // sum can differ from it by a raw unit per fill (coin-M).
        let one_fill = {
            let mut sim = leg.clone();
            risk::settle_fill(&mut sim, spec, close_side, lots, bp, Money::ZERO, false).wallet_delta
        };
        let wallet_before = self.state.accounts[k].wallets[settle];
        let queue = self.adl_queue(spec, q < 0);
        let mut remaining = lots.0;
        for (ck, cside, _) in queue {
            if remaining == 0 {
                break;
            }
            let account = self.state.accounts[ck].id;
            let held = self.state.accounts[ck]
                .leg(spec.id, cside)
                .expect("leg")
                .qty
                .0;
            assert!(
                held != 0 && (held > 0) != (q > 0),
                "ADL counterparty on the wrong side"
            );
            let take = remaining.min(held.abs());
            self.cancel_where(ck, |s| s.id == spec.id, CancelReason::AutoDeleveraged, out);
            let fund_leg = (spec, PositionSide::Both);
            self.move_position(k, fund_leg, close_side, QtyLots(take), bp, Money::ZERO);
            let realized_pnl = self.move_position(
                ck,
                (spec, cside),
                close_side.opposite(),
                QtyLots(take),
                bp,
                Money::ZERO,
            );
            let signed = if close_side == Side::Sell {
                take
            } else {
                -take
            };
            out.push(Event::AutoDeleveraged {
                account,
                liquidated,
                instrument: spec.id,
                qty: spec.qty_of(QtyLots(signed)),
                price: bp,
                realized_pnl,
            });
            remaining -= take;
        }
        let after = self.state.accounts[k]
            .leg(spec.id, PositionSide::Both)
            .map(|l| l.qty.0)
            .unwrap_or(0);
        assert_eq!(
            before.abs() - after.abs(),
            lots.0 - remaining,
            "ADL closed what it reported"
        );
        // The rounding residue between the fills and one fill goes to the last
        // counterparty (in its event's realized PnL), so the closed account gets exactly
        // the one-fill amount: a fund closed at its own bankruptcy price ends at ≥ 0.
        let residue = one_fill - (self.state.accounts[k].wallets[settle] - wallet_before);
        if remaining == 0 && !residue.is_zero() {
            let Some(Event::AutoDeleveraged {
                account,
                realized_pnl,
                ..
            }) = out.last_mut()
            else {
                unreachable!("a deleveraged lot has an event");
            };
            // Per fill: its value (coin-M) and the closed share of the basis, each
            // rounded once; there are at most `lots` fills.
            assert!(
                residue.raw().abs() <= 2 * i128::from(lots.0),
                "more than rounding between the fills and one fill"
            );
            *realized_pnl -= residue;
            let ck = self.idx(*account).expect("counterparty");
            self.state.accounts[ck].wallets[settle] -= residue;
            self.state.accounts[k].wallets[settle] += residue;
        }
        QtyLots(remaining)
    }

    /// An insurance fund left with a negative balance by what the position it carries in
    /// `spec` cost it (a funding payment, a work-off below its average entry) has its
    /// position there auto-deleveraged: at the mark when the mark leaves its balance ≥ 0,
    /// else at its own bankruptcy price (where balance + uPnL of that position is zero).
    pub(crate) fn check_fund(&mut self, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        if !self.auto_deleveraging() {
            return;
        }
        let settle = spec.settle_asset.0 as usize;
        let Some(fk) = self.idx(fund_account_id(spec.settle_asset)) else {
            return;
        };
        let wallet = self.state.accounts[fk].wallets[settle];
        let Some(leg) = self.state.accounts[fk].leg(spec.id, PositionSide::Both) else {
            return;
        };
        if !wallet.is_negative() || leg.is_flat() {
            return;
        }
        let Some(mark) = self.state.marks[spec.id.0 as usize] else {
            return;
        };
        let price = if (wallet + risk::upnl(leg, spec, mark)).is_negative() {
            risk::bankruptcy_price(leg, spec, wallet).unwrap_or(mark)
        } else {
            mark
        };
        let fund = self.state.accounts[fk].id;
        let lots = leg.qty.abs();
        let left = self.auto_deleverage(fk, fund, spec, lots, price, out);
        assert!(
            left.is_zero(),
            "the opposite side of a fund's position is other accounts'"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    /// The three shorts of `tests/adl.rs` at mark 8,750 (numbers worked there), as
    /// rankings at 10^-12, floored: 375 × 2,625 / (3,000 × 875) = 0.375 exactly;
    /// 660 × 3,500 / (4,160 × 2,660) = 2,310,000 / 11,065,600 = 0.208755060728…;
    /// −15 × 985 / (2,610 × 2,625) = −14,775 / 6,851,250 = −0.0021565407779… (floor
    /// −0.002156540778).
    #[test]
    fn binance_ranking_exact() {
        assert_eq!(
            adl_rank(m("375"), m("3000"), m("2625"), m("875")),
            AdlRank {
                profitable: true,
                ranking: 375_000_000_000
            }
        );
        assert_eq!(
            adl_rank(m("660"), m("-4160"), m("3500"), m("2660")),
            AdlRank {
                profitable: true,
                ranking: 208_755_060_728
            }
        );
        assert_eq!(
            adl_rank(m("-15"), m("-2610"), m("2625"), m("985")),
            AdlRank {
                profitable: false,
                ranking: -2_156_540_778
            }
        );
        // Every profitable position before every losing one, whatever the numbers.
        assert!(
            adl_rank(m("0.000000000001"), m("1000000"), m("1"), m("1000000"))
                > adl_rank(
                    m("-0.000000000001"),
                    m("1"),
                    m("1000000"),
                    m("0.000000000001")
                )
        );
    }

    /// The specification's case A1 (CASES.md, "ADL rank"): long 1 BTC, entry 10,000,
    /// mark 11,000, bankruptcy 9,000: PnL% = 1,000 / 10,000 = 10%, effective leverage
    /// 11,000 / (11,000 − 9,000) = 5.5, rank 0.55. (The position's equity is the mark
    /// value less the bankruptcy value, 2,000: a cross wallet of 1,000 + uPnL 1,000.)
    #[test]
    fn case_a1() {
        assert_eq!(
            adl_rank(m("1000"), m("10000"), m("11000"), m("2000")),
            AdlRank {
                profitable: true,
                ranking: 550_000_000_000
            }
        );
    }

    /// Zero or negative equity: infinite effective leverage, so a profitable position is
    /// first (saturated ranking) and a losing one has ranking 0 (−x / ∞), ahead of every
    /// other losing one; a zero uPnL ranks 0 among the profitable.
    #[test]
    fn no_equity_and_no_pnl() {
        assert_eq!(
            adl_rank(m("5"), m("100"), m("100"), m("-1")),
            AdlRank {
                profitable: true,
                ranking: i128::MAX
            }
        );
        assert_eq!(
            adl_rank(m("-5"), m("100"), m("100"), Money::ZERO),
            AdlRank {
                profitable: false,
                ranking: 0
            }
        );
        assert!(
            adl_rank(m("-5"), m("100"), m("100"), Money::ZERO)
                > adl_rank(m("-0.000000000001"), m("100"), m("100"), m("1"))
        );
        assert_eq!(
            adl_rank(Money::ZERO, m("100"), m("100"), m("1")),
            AdlRank {
                profitable: true,
                ranking: 0
            }
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// The exact ranking as a fraction `(num, den)`, `den > 0` (positive equity).
    fn exact(u: i128, entry: i128, notional: i128, equity: i128) -> (i128, i128) {
        if u >= 0 {
            (u * notional, entry * equity)
        } else {
            (u * equity, entry * notional)
        }
    }

    proptest! {
        /// The fixed-point ranking orders positions as the exact fractions do: a strictly
        /// higher ranking means a strictly higher exact rank, and a strictly higher exact
        /// rank never ranks lower (flooring at 10^-12 can only merge neighbours, whose
        /// tie then goes to the lower account id). Magnitudes up to 10^9 raw keep the
        /// cross products of the exact comparison inside i128.
        #[test]
        fn fixed_point_ranking_keeps_the_exact_order(
            a in (-1_000_000_000i128..1_000_000_000, 1i128..1_000_000_000, 1i128..1_000_000_000, 1i128..1_000_000_000),
            b in (-1_000_000_000i128..1_000_000_000, 1i128..1_000_000_000, 1i128..1_000_000_000, 1i128..1_000_000_000),
        ) {
            let ra = adl_rank(Money(a.0), Money(a.1), Money(a.2), Money(a.3));
            let rb = adl_rank(Money(b.0), Money(b.1), Money(b.2), Money(b.3));
            prop_assert_eq!(ra.profitable, a.0 >= 0);
            prop_assert_eq!(rb.profitable, b.0 >= 0);
            if ra.profitable == rb.profitable {
                let (na, da) = exact(a.0, a.1, a.2, a.3);
                let (nb, db) = exact(b.0, b.1, b.2, b.3);
                let (x, y) = (
                    ethnum::I256::from(na) * ethnum::I256::from(db),
                    ethnum::I256::from(nb) * ethnum::I256::from(da),
                );
                if ra.ranking > rb.ranking {
                    prop_assert!(x > y);
                }
                if x > y {
                    prop_assert!(ra.ranking >= rb.ranking);
                }
            } else {
                prop_assert_eq!(ra > rb, ra.profitable);
            }
        }
    }
}
