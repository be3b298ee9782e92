//! Weighted fair admission to saturated capacity.
//!
//! A [`FairGate`] admits at most `capacity` holders at once. While there is
//! room nobody waits. Once it is full, waiters are admitted in the order of
//! their *finish tags* (weighted fair queueing): a tenant's next waiter is
//! tagged `max(virtual time, its previous tag) + 1 / weight`, and each
//! admission moves virtual time to the admitted tag. A tenant that queues
//! a thousand calls at once therefore tags them far into the future, while
//! a quiet tenant's next call is tagged just after "now" and goes ahead of
//! the backlog: each tenant gets its weight's share of the capacity, and
//! the flood waits behind itself.
//!
//! A holder that keeps its place a long time (a model stream) can ask
//! [`FairPermit::over_share`] whether its tenant holds more than its
//! weight's share of the capacity while another tenant waits; if so it
//! hands its place over and queues again behind that tenant.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Virtual-time units of one admission at weight 1.
const UNIT: u64 = 1 << 20;

struct Waiter {
    tag: u64,
    seq: u64,
    tenant: Arc<str>,
    tx: oneshot::Sender<FairPermit>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.tag, self.seq) == (other.tag, other.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.tag, self.seq).cmp(&(other.tag, other.seq))
    }
}

struct State {
    capacity: usize,
    in_use: usize,
    vtime: u64,
    seq: u64,
    /// Each tenant's last finish tag.
    last: HashMap<String, u64>,
    waiting: BinaryHeap<Reverse<Waiter>>,
    /// Tenants holding or waiting for places: (held, waiting, weight).
    active: HashMap<Arc<str>, Active>,
}

#[derive(Default)]
struct Active {
    held: usize,
    waiting: usize,
    weight: u32,
}

impl State {
    fn active(&mut self, tenant: &Arc<str>) -> &mut Active {
        self.active.entry(tenant.clone()).or_default()
    }

    /// Forgets a tenant that neither holds nor waits any more.
    fn tidy(&mut self, tenant: &Arc<str>) {
        if self
            .active
            .get(tenant)
            .is_some_and(|a| a.held == 0 && a.waiting == 0)
        {
            self.active.remove(tenant);
        }
    }
}

/// Capacity shared by all tenants, admitted fairly when saturated.
#[derive(Clone)]
pub struct FairGate {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FairGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairGate")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// One admitted holder; dropping it admits the next waiter.
pub struct FairPermit {
    gate: Option<Arc<Mutex<State>>>,
    tenant: Arc<str>,
}

impl std::fmt::Debug for FairPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FairPermit")
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock leaves plain counters behind;
    // carrying on with them is better than refusing every call.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FairGate {
    /// A gate admitting `capacity` holders at once (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                capacity: capacity.max(1),
                in_use: 0,
                vtime: 0,
                seq: 0,
                last: HashMap::new(),
                waiting: BinaryHeap::new(),
                active: HashMap::new(),
            })),
        }
    }

    /// A gate that never saturates: every caller is admitted at once. For
    /// tests and embedding, and for a server configured without
    /// `[limits] max_concurrent_runs`, where admission is not limited.
    pub fn unbounded() -> Self {
        Self::new(usize::MAX)
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        lock(&self.state).capacity
    }

    /// Holders admitted now.
    pub fn in_use(&self) -> usize {
        lock(&self.state).in_use
    }

    /// Callers waiting (cancelled ones included until they are reached).
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting.len()
    }

    /// Waits for room and takes it, as `tenant` with `weight` (≥ 1).
    /// Dropping the future while waiting gives up the place in line.
    pub async fn acquire(&self, tenant: &str, weight: u32) -> FairPermit {
        let name: Arc<str> = Arc::from(tenant);
        let rx = {
            let mut s = lock(&self.state);
            let step = UNIT / u64::from(weight.max(1));
            let start = s.vtime.max(s.last.get(tenant).copied().unwrap_or(0));
            let tag = start + step;
            s.active(&name).weight = weight.max(1);
            if s.in_use < s.capacity && s.waiting.is_empty() {
                s.in_use += 1;
                s.active(&name).held += 1;
                // Admitted at once, still charged: a tenant using all the
                // idle capacity is behind others when saturation starts.
                s.last.insert(tenant.to_owned(), tag);
                return FairPermit {
                    gate: Some(self.state.clone()),
                    tenant: name,
                };
            }
            s.last.insert(tenant.to_owned(), tag);
            if s.last.len() > 100_000 {
                let v = s.vtime;
                s.last.retain(|_, t| *t > v);
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let seq = s.seq;
            s.active(&name).waiting += 1;
            s.waiting.push(Reverse(Waiter {
                tag,
                seq,
                tenant: name.clone(),
                tx,
            }));
            rx
        };
        match rx.await {
            Ok(permit) => permit,
            // The gate never drops a waiter's sender without sending.
            Err(_) => {
                let mut s = lock(&self.state);
                s.in_use += 1;
                s.active(&name).held += 1;
                FairPermit {
                    gate: Some(self.state.clone()),
                    tenant: name,
                }
            }
        }
    }
}

impl FairPermit {
    /// Whether this holder's tenant holds more than its weight's share of
    /// the capacity while another tenant waits: a long holder that sees
    /// this should give its place up and queue again.
    pub fn over_share(&self) -> bool {
        let Some(state) = &self.gate else {
            return false;
        };
        let s = lock(state);
        let others_wait = s
            .active
            .iter()
            .any(|(t, a)| a.waiting > 0 && *t != self.tenant);
        if !others_wait {
            return false;
        }
        let Some(mine) = s.active.get(&self.tenant) else {
            return false;
        };
        let total: u64 = s.active.values().map(|a| u64::from(a.weight)).sum();
        // Its share of the places, at least one.
        // Saturating: an unbounded gate's capacity times a weight would
        // overflow (and such a gate has no waiters to yield to anyway).
        let share =
            ((s.capacity as u64).saturating_mul(u64::from(mine.weight)) / total.max(1)).max(1);
        mine.held as u64 > share
    }
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        let Some(state) = self.gate.take() else {
            return;
        };
        let next = {
            let mut s = lock(&state);
            if let Some(a) = s.active.get_mut(&self.tenant) {
                a.held = a.held.saturating_sub(1);
            }
            s.tidy(&self.tenant);
            match s.waiting.pop() {
                Some(Reverse(w)) => {
                    s.vtime = s.vtime.max(w.tag);
                    let a = s.active(&w.tenant);
                    a.waiting = a.waiting.saturating_sub(1);
                    a.held += 1;
                    Some((w.tx, w.tenant))
                }
                None => {
                    s.in_use = s.in_use.saturating_sub(1);
                    None
                }
            }
        };
        // Handed over outside the lock: if that waiter gave up, the permit
        // comes back here and is dropped again, reaching the next one.
        if let Some((tx, tenant)) = next {
            let _ = tx.send(FairPermit {
                gate: Some(state),
                tenant,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test]
    async fn admits_at_once_while_there_is_room_and_hands_over_on_drop() {
        let gate = FairGate::new(2);
        let a = gate.acquire("a", 1).await;
        let _b = gate.acquire("b", 1).await;
        assert_eq!(gate.in_use(), 2);
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire("c", 1).await });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        drop(a);
        let _c = waiter.await.unwrap();
        assert_eq!((gate.in_use(), gate.waiting()), (2, 0));
    }

    #[tokio::test]
    async fn an_unbounded_gate_never_makes_anyone_wait() {
        let gate = FairGate::unbounded();
        let mut held = Vec::new();
        for i in 0..1_000 {
            held.push(gate.acquire(if i % 2 == 0 { "a" } else { "b" }, 3).await);
        }
        assert_eq!((gate.in_use(), gate.waiting()), (1_000, 0));
        assert!(
            !held[0].over_share(),
            "nobody waits, so nobody is over its share"
        );
    }

    #[tokio::test]
    async fn a_cancelled_waiter_passes_its_turn_on() {
        let gate = FairGate::new(1);
        let held = gate.acquire("a", 1).await;
        let g = gate.clone();
        let gone = tokio::spawn(async move { g.acquire("b", 1).await });
        let g = gate.clone();
        let next = tokio::spawn(async move { g.acquire("c", 1).await });
        while gate.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        let _c = next.await.unwrap();
        assert_eq!(gate.in_use(), 1, "the slot went to c, none leaked");
    }

    #[tokio::test]
    async fn admission_order_follows_weights_under_saturation() {
        let gate = FairGate::new(1);
        let held = gate.acquire("x", 1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // a (weight 1) queues 6, b (weight 2) queues 6, all at once.
        for (tenant, weight) in [("a", 1), ("b", 2)] {
            for _ in 0..6 {
                let g = gate.clone();
                let order = order.clone();
                tasks.push(tokio::spawn(async move {
                    let p = g.acquire(tenant, weight).await;
                    order.lock().unwrap().push(tenant);
                    drop(p);
                }));
                while gate.waiting() < tasks.len() {
                    tokio::task::yield_now().await;
                }
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let first6: Vec<_> = order[..6].to_vec();
        let b = first6.iter().filter(|t| **t == "b").count();
        assert_eq!(b, 4, "weight 2 gets two thirds: {order:?}");
    }

    #[tokio::test]
    async fn a_tenant_over_its_share_is_told_so_only_while_another_waits() {
        let gate = FairGate::new(4);
        let mut a = Vec::new();
        for _ in 0..4 {
            a.push(gate.acquire("a", 1).await);
        }
        assert!(!a[0].over_share(), "nobody else waits: all four are a's");
        let g = gate.clone();
        let b = tokio::spawn(async move { g.acquire("b", 1).await });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // a holds 4 of 4 with b waiting (share 2 each): a yields a place.
        assert!(a[0].over_share());
        let first = a.remove(0);
        drop(first);
        let b = b.await.unwrap();
        assert!(!b.over_share(), "b holds one, under its share");
        // a still holds 3 > 2, but nobody waits any more.
        assert!(!a[0].over_share());
        let g = gate.clone();
        let c = tokio::spawn(async move { g.acquire("c", 1).await });
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // a, b, c active: share of 4 by three is 1; a holds 3.
        assert!(a[0].over_share());
        drop(a);
        let _c = c.await.unwrap();
        assert_eq!((gate.in_use(), gate.waiting()), (2, 0));
        assert!(lock(&gate.state).active.len() == 2, "a was forgotten");
    }

    /// Quiet tenants' latency with and without a flood, in virtual time
    /// (tokio's paused clock: service times advance the clock, nothing
    /// waits for real). Returns the quiet tenants' p99 in milliseconds.
    pub(crate) async fn quiet_p99(gate: FairGate, flood: usize) -> f64 {
        // Model calls take 5–15 ms (spread deterministically), so slots
        // free at different times, as they do with real providers.
        let service = |i: u64| Duration::from_millis(5 + (i * 7919) % 11);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..flood as u64 {
            let g = gate.clone();
            tasks.push(tokio::spawn(async move {
                let _p = g.acquire("flood", 1).await;
                tokio::time::sleep(service(i)).await;
                None
            }));
        }
        for q in 0..3u64 {
            for i in 0..40u64 {
                let g = gate.clone();
                tasks.push(tokio::spawn(async move {
                    // Steady: one call every 20 ms, tenants out of phase.
                    tokio::time::sleep_until(start + Duration::from_millis(i * 20 + q * 7)).await;
                    let t = Instant::now();
                    let _p = g.acquire(&format!("quiet{q}"), 1).await;
                    tokio::time::sleep(service(q * 40 + i)).await;
                    Some(t.elapsed().as_secs_f64() * 1000.0)
                }));
            }
        }
        let mut lat = Vec::new();
        for t in tasks {
            if let Some(ms) = t.await.unwrap() {
                lat.push(ms);
            }
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        lat[(lat.len() * 99 / 100).min(lat.len() - 1)]
    }

    #[tokio::test(start_paused = true)]
    async fn a_flooding_tenant_does_not_raise_the_others_p99_by_half() {
        let quiet = quiet_p99(FairGate::new(8), 0).await;
        let flooded = quiet_p99(FairGate::new(8), 2_000).await;
        assert!(quiet >= 14.0, "service times reach 15 ms: {quiet}");
        assert!(
            flooded <= quiet * 1.5,
            "quiet p99 {flooded:.1} ms under flood vs {quiet:.1} ms without"
        );
    }
}
