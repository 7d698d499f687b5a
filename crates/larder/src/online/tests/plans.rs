//! The plan cache behind `FeatureStore::get_online_features`.

use larder_registry::RegistryState;

use super::*;

fn snapshot() -> Arc<Snapshot> {
    Arc::new(Snapshot {
        state: RegistryState::default(),
        generation: None,
        loaded_at: Utc::now(),
    })
}

#[test]
fn plans_are_kept_for_one_snapshot_and_selection() {
    let fx = Fixture::new();
    let trips = selection(&["driver_stats:trips"]);
    let balance = selection(&["customer_profile:balance"]);
    let plan = OnlinePlan::new(&fx.defs, &trips, false).expect("plan");
    let (first, second) = (snapshot(), snapshot());
    let cache = PlanCache::default();
    assert!(cache.get(&first, &trips, false).is_none(), "empty");
    cache.insert(&first, trips.clone(), false, plan.clone());
    let found = cache.get(&first, &trips, false).expect("cached");
    assert!(Arc::ptr_eq(&found.views, &plan.views), "the same plan");
    assert!(cache.get(&first, &trips, true).is_none(), "other names");
    assert!(
        cache.get(&first, &balance, false).is_none(),
        "other features"
    );
    // An equal but distinct snapshot (a registry refresh) finds nothing, and replaces the
    // first one's plans.
    assert!(cache.get(&second, &trips, false).is_none());
    let other = OnlinePlan::new(&fx.defs, &balance, true).expect("plan");
    cache.insert(&second, balance.clone(), true, other);
    assert!(cache.get(&second, &balance, true).is_some());
    assert!(cache.get(&first, &trips, false).is_none());
    assert!(cache.get(&second, &trips, false).is_none(), "emptied");
}

#[test]
fn the_plan_cache_is_bounded() {
    let fx = Fixture::new();
    let plan = OnlinePlan::new(&fx.defs, &selection(&["driver_stats:trips"]), false).expect("plan");
    let snap = snapshot();
    let cache = PlanCache::default();
    let service = |i: usize| FeatureSelection::Service(format!("service_{i}"));
    for i in 0..MAX_CACHED_PLANS + 10 {
        cache.insert(&snap, service(i), false, plan.clone());
        let held: usize = cache.lock().plans.iter().map(HashMap::len).sum();
        assert!(held <= MAX_CACHED_PLANS, "{held} plans held");
    }
    assert!(
        cache
            .get(&snap, &service(MAX_CACHED_PLANS + 9), false)
            .is_some()
    );
}
