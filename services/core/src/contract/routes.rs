//! The [`RouteTable`] suite: EC2's semantics for VIP routes, with the
//! deviations of an emulator (moto) asserted as they are.

use crate::routes::{Gate, RouteChange, RouteEntry, RouteError, RouteTable};
use crate::types::{EniId, RouteTableId, Vip};

fn vip(text: &str) -> Vip {
    text.parse().unwrap_or_else(|e| panic!("contract VIP {text}: {e}"))
}

/// Deviations of a route service from EC2 that the route suite tolerates,
/// each asserted as it is (so a fixed emulator makes the suite fail, and
/// the flag can go).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteDeviations {
    /// `CreateRoute` on an existing destination replaces the route instead
    /// of failing with `RouteAlreadyExists` (moto 5).
    pub create_replaces_existing: bool,
}

fn target_of(entries: &[RouteEntry], table: &RouteTableId, vip: Vip) -> Option<Option<EniId>> {
    entries
        .iter()
        .find(|e| &e.table == table && e.destination == vip)
        .map(|e| e.target.clone())
}

/// Every `RouteTable` operation against EC2's semantics. `tables`: at least
/// two route tables with no routes to 10.200.0.0/24; `enis`: at least two.
pub async fn route_table_contract<R: RouteTable>(routes: &R, tables: &[RouteTableId], enis: &[EniId]) {
    route_table_contract_with(routes, tables, enis, RouteDeviations::default()).await;
}

/// [`route_table_contract`], tolerating the given deviations.
pub async fn route_table_contract_with<R: RouteTable>(
    routes: &R,
    tables: &[RouteTableId],
    enis: &[EniId],
    deviations: RouteDeviations,
) {
    assert!(
        tables.len() >= 2 && enis.len() >= 2,
        "the route suite needs two tables and two ENIs"
    );
    let (t0, t1) = (&tables[0], &tables[1]);
    let (e0, e1) = (&enis[0], &enis[1]);
    let (v0, v1) = (vip("10.200.0.10/32"), vip("10.200.0.11/32"));
    let open = Gate::open();
    let describe = |table: RouteTableId| async move {
        routes
            .describe(&table)
            .await
            .unwrap_or_else(|e| panic!("describe {table}: {e}"))
    };
    let create = |table: &RouteTableId, vip: Vip, eni: &EniId| RouteChange::Create {
        table: table.clone(),
        vip,
        eni: eni.clone(),
    };
    let replace = |table: &RouteTableId, vip: Vip, eni: &EniId| RouteChange::Replace {
        table: table.clone(),
        vip,
        eni: eni.clone(),
    };
    let delete = |table: &RouteTableId, vip: Vip| RouteChange::Delete {
        table: table.clone(),
        vip,
    };

    for table in [t0, t1] {
        let before = describe(table.clone()).await;
        for v in [v0, v1] {
            assert!(
                target_of(&before, table, v).is_none(),
                "the tables must start without routes to {v}: {before:?}"
            );
        }
    }

    // Replace needs a route; create needs none.
    assert_eq!(
        routes.change(&replace(t0, v0, e0), &open).await,
        Err(RouteError::NoRoute {
            table: t0.clone(),
            vip: v0
        })
    );
    assert_eq!(routes.change(&create(t0, v0, e0), &open).await, Ok(()));
    if deviations.create_replaces_existing {
        assert_eq!(
            routes.change(&create(t0, v0, e1), &open).await,
            Ok(()),
            "deviation: create replaces"
        );
        assert_eq!(target_of(&describe(t0.clone()).await, t0, v0), Some(Some(e1.clone())));
        assert_eq!(routes.change(&replace(t0, v0, e0), &open).await, Ok(()));
    } else {
        assert_eq!(
            routes.change(&create(t0, v0, e1), &open).await,
            Err(RouteError::AlreadyExists {
                table: t0.clone(),
                vip: v0
            })
        );
        assert_eq!(target_of(&describe(t0.clone()).await, t0, v0), Some(Some(e0.clone())));
    }
    assert_eq!(routes.change(&replace(t0, v0, e1), &open).await, Ok(()));
    assert_eq!(routes.change(&create(t1, v0, e1), &open).await, Ok(()));
    assert_eq!(routes.change(&create(t0, v1, e0), &open).await, Ok(()));

    // A closed gate: nothing is sent.
    let closed = Gate::new(|| false);
    assert_eq!(
        routes.change(&replace(t0, v1, e1), &closed).await,
        Err(RouteError::Fenced)
    );
    assert_eq!(
        routes.change(&create(t1, v1, e1), &closed).await,
        Err(RouteError::Fenced)
    );

    // Describe shows one table's own routes, with their targets.
    let after0 = describe(t0.clone()).await;
    let after1 = describe(t1.clone()).await;
    assert!(after0.iter().all(|e| &e.table == t0), "{after0:?}");
    assert!(after1.iter().all(|e| &e.table == t1), "{after1:?}");
    assert_eq!(target_of(&after0, t0, v0), Some(Some(e1.clone())));
    assert_eq!(target_of(&after1, t1, v0), Some(Some(e1.clone())));
    assert_eq!(
        target_of(&after0, t0, v1),
        Some(Some(e0.clone())),
        "the fenced replace was not sent"
    );
    assert_eq!(target_of(&after1, t1, v1), None, "the fenced create was not sent");
    let ours: Vec<&RouteEntry> = after0
        .iter()
        .chain(&after1)
        .filter(|e| [v0, v1].contains(&e.destination))
        .collect();
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert!(ours.iter().all(|e| !e.blackhole), "{ours:?}");

    // Delete: only an existing route.
    assert_eq!(routes.change(&delete(t0, v1), &open).await, Ok(()));
    assert_eq!(
        routes.change(&delete(t0, v1), &open).await,
        Err(RouteError::NoRoute {
            table: t0.clone(),
            vip: v1
        })
    );
    assert_eq!(target_of(&describe(t0.clone()).await, t0, v1), None);

    // Unknown tables are errors of their own, for every call.
    let unknown = RouteTableId("rtb-0000000000000dead".into());
    let unknown_err = RouteError::UnknownTable(unknown.clone());
    assert_eq!(routes.describe(&unknown).await, Err(unknown_err.clone()));
    for change in [
        replace(&unknown, v0, e0),
        create(&unknown, v0, e0),
        delete(&unknown, v0),
    ] {
        assert_eq!(
            routes.change(&change, &open).await,
            Err(unknown_err.clone()),
            "{change:?}"
        );
    }
}
