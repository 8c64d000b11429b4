//! Views for the comparison.

use super::*;

impl RefModel {
    pub fn fee_income(&self, asset: AssetId) -> Money {
        self.fee_income[usize::from(asset.0)].to_money()
    }

    pub fn conversion_desk(&self, asset: AssetId) -> Money {
        self.conversion_desk[usize::from(asset.0)].to_money()
    }

    /// Every account (insurance funds included), by id.
    pub fn account_views(&self) -> Vec<AccountView> {
        let mut v: Vec<AccountView> = self
            .accounts
            .iter()
            .map(|a| {
                let mut legs = Vec::new();
                for spec in &self.cfg.instruments {
                    let orders = self.orders_of(a.id, spec.id);
                    let leg = a
                        .leg(spec.id)
                        .cloned()
                        .unwrap_or_else(|| Leg::new(spec.id, spec));
                    let view = LegView {
                        instrument: spec.id,
                        leverage: leg.leverage,
                        mode: leg.mode,
                        qty: QtyLots(leg.lots),
                        basis: leg.basis.to_money(),
                        isolated_margin: leg.isolated_margin.to_money(),
                        order_margin: orders.iter().map(|o| o.reserved).sum::<Q>().to_money(),
                        order_notional: orders
                            .iter()
                            .map(|o| o.open_notional)
                            .sum::<Q>()
                            .to_money(),
                        open_orders: orders.iter().map(|o| o.id).collect(),
                    };
                    if !view.is_default(spec.max_leverage) {
                        legs.push(view);
                    }
                }
                AccountView {
                    id: a.id,
                    parent: a.parent,
                    system: a.system,
                    wallets: a.wallets.iter().map(|w| w.to_money()).collect(),
                    legs,
                }
            })
            .collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Every open order's reservation, by id.
    pub fn order_views(&self) -> Vec<(OrderId, OrderView)> {
        let mut v: Vec<(OrderId, OrderView)> = self
            .orders
            .iter()
            .map(|o| {
                (
                    o.id,
                    OrderView {
                        margin_notional: o.margin_notional.to_money(),
                        reserved: o.reserved.to_money(),
                        open_notional: o.open_notional.to_money(),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The reference book of `i` (its digest is the engine book's documented encoding).
    pub fn book(&self, i: InstrumentId) -> &RefBook {
        &self.books[i.0 as usize]
    }
}
