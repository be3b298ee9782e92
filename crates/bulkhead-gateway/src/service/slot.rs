//! A call's place among the calls its provider admits at once
//! (`max_concurrency`), taken through the provider's fair gate, so waiting
//! tenants are admitted by weight, not in arrival order.

use bulkhead_quota::FairGate;
use bulkhead_quota::fair::FairPermit;

/// A stream's hold on its provider's capacity: held while bytes move,
/// given up while the stream is idle (the provider silent, the client not
/// reading) and, while another tenant waits, whenever its tenant holds
/// more than its share.
pub(super) struct Slot {
    pub(super) gate: FairGate,
    pub(super) tenant: String,
    pub(super) weight: u32,
    pub(super) permit: Option<FairPermit>,
}

impl Slot {
    pub(super) async fn take(gate: FairGate, tenant: String, weight: u32) -> Self {
        let permit = Some(gate.acquire(&tenant, weight).await);
        Self {
            gate,
            tenant,
            weight,
            permit,
        }
    }

    pub(super) fn release(&mut self) {
        self.permit = None;
    }

    pub(super) async fn hold(&mut self) {
        if self.permit.is_none() {
            self.permit = Some(self.gate.acquire(&self.tenant, self.weight).await);
        }
    }

    /// Between two writes: over its tenant's share while another waits,
    /// the stream queues again (behind that tenant, by fair queueing).
    pub(super) async fn share(&mut self) {
        if self.permit.as_ref().is_some_and(FairPermit::over_share) {
            self.permit = None;
            self.hold().await;
        }
    }
}
