//! What a Child SA occupies while it exists, held as values that give it
//! back when dropped, so no path (delete, failed rekey, closed IKE SA)
//! can leak or double-free it:
//!
//! - its inbound SPI, in a [`SpiTable`] shared by every IKE SA of one
//!   endpoint (and its owner): a new SPI is drawn again until it is not
//!   in use, so it can never replace another SA's, of any tenant;
//! - its place in a [`ChildBudget`], a bound on the Child SAs of every
//!   IKE SA made from one configuration (a vrouter tunnel).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand_core::RngCore;

/// SPIs 1-255 are reserved (RFC 4303 §2.1).
const FIRST_SPI: u32 = 256;
/// Draws before giving up: with 2^32 values this only fails when the
/// table is nearly full (or deliberately narrowed in a test).
const DRAWS: usize = 64;

#[derive(Debug)]
struct SpiSet {
    used: HashSet<u32>,
    first: u32,
    last: u32,
}

/// Inbound ESP SPIs in use.
#[derive(Clone)]
pub struct SpiTable(Arc<Mutex<SpiSet>>);

impl fmt::Debug for SpiTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiTable")
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl Default for SpiTable {
    fn default() -> Self {
        Self::with_range(FIRST_SPI, u32::MAX)
    }
}

impl SpiTable {
    /// A table drawing only from `first..=last` (tests narrow it to make
    /// collisions certain).
    pub fn with_range(first: u32, last: u32) -> Self {
        let first = first.max(FIRST_SPI);
        Self(Arc::new(Mutex::new(SpiSet {
            used: HashSet::new(),
            first,
            last: last.max(first),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, SpiSet> {
        // Only inserts and removes happen under the lock: a panic cannot
        // leave the set half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh SPI no other SA holds, or `None` if none was found.
    pub(crate) fn claim_new(&self, rng: &mut impl RngCore) -> Option<SpiClaim> {
        let mut set = self.lock();
        let span = u64::from(set.last - set.first) + 1;
        for _ in 0..DRAWS {
            // Reduced modulo the span: a bias of at most 2^-32 for the
            // full range, irrelevant for an identifier.
            let offset = u32::try_from(u64::from(rng.next_u32()) % span).unwrap_or(0);
            let spi = set.first + offset;
            if set.used.insert(spi) {
                return Some(SpiClaim {
                    table: self.clone(),
                    spi,
                });
            }
        }
        None
    }

    /// Keeps `spi` from being drawn while its owner still uses it (an SA
    /// kept a little after its delete); `None` if something holds it.
    pub fn hold(&self, spi: u32) -> Option<SpiClaim> {
        self.lock().used.insert(spi).then(|| SpiClaim {
            table: self.clone(),
            spi,
        })
    }

    pub fn in_use(&self) -> usize {
        self.lock().used.len()
    }

    pub fn contains(&self, spi: u32) -> bool {
        self.lock().used.contains(&spi)
    }
}

/// One inbound SPI, held until dropped.
pub struct SpiClaim {
    table: SpiTable,
    spi: u32,
}

impl SpiClaim {
    pub fn spi(&self) -> u32 {
        self.spi
    }
}

impl fmt::Debug for SpiClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiClaim({:08x})", self.spi)
    }
}

impl Drop for SpiClaim {
    fn drop(&mut self) {
        self.table.lock().used.remove(&self.spi);
    }
}

/// A bound on the Child SAs of every IKE SA made from one configuration.
#[derive(Debug)]
pub struct ChildBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ChildBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place, if one is free.
    pub(crate) fn take(self: &Arc<Self>) -> Option<BudgetClaim> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| BudgetClaim(self.clone()))
    }

    /// A place even beyond the limit: for a rekey, whose predecessor goes
    /// away next, and for Child SAs we asked for ourselves.
    pub(crate) fn take_anyway(self: &Arc<Self>) -> BudgetClaim {
        self.used.fetch_add(1, Ordering::Relaxed);
        BudgetClaim(self.clone())
    }
}

/// One place in a [`ChildBudget`], given back when dropped.
#[derive(Debug)]
pub struct BudgetClaim(Arc<ChildBudget>);

impl Drop for BudgetClaim {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many Child SAs an IKE SA may hold.
#[derive(Debug, Clone)]
pub struct ChildLimits {
    /// Per IKE SA; a rekey may briefly hold twice as many (the old SAs
    /// until they are deleted), never more.
    pub per_ike_sa: usize,
    /// Shared by every IKE SA of this configuration (a tunnel), if set.
    pub per_config: Option<Arc<ChildBudget>>,
}

impl Default for ChildLimits {
    fn default() -> Self {
        Self {
            per_ike_sa: 32,
            per_config: None,
        }
    }
}

/// What a Child SA holds while it exists (given back when dropped).
#[derive(Debug)]
pub(crate) struct ChildSlot {
    pub(crate) _spi: SpiClaim,
    pub(crate) _budget: Option<BudgetClaim>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn spis_are_never_shared_and_come_back_when_dropped() {
        let table = SpiTable::with_range(300, 303);
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let claims: Vec<SpiClaim> = (0..4)
            .map(|_| table.claim_new(&mut rng).expect("room"))
            .collect();
        let mut spis: Vec<u32> = claims.iter().map(SpiClaim::spi).collect();
        spis.sort_unstable();
        assert_eq!(spis, [300, 301, 302, 303]);
        assert!(table.claim_new(&mut rng).is_none(), "full: none reused");
        assert!(table.hold(301).is_none());
        drop(claims);
        assert_eq!(table.in_use(), 0);
        let held = table.hold(301).expect("free again");
        assert!(table.contains(301));
        drop(held);
        assert!(!table.contains(301));
        // Reserved SPIs are never drawn.
        let low = SpiTable::with_range(0, 10);
        assert!(low.claim_new(&mut rng).is_some_and(|c| c.spi() >= 256));
    }

    #[test]
    fn budgets_bound_what_the_peer_gets_and_count_everything() {
        let b = ChildBudget::new(2);
        let one = b.take().expect("1");
        let two = b.take().expect("2");
        assert!(b.take().is_none());
        let forced = b.take_anyway();
        assert_eq!(b.in_use(), 3);
        drop((one, two, forced));
        assert_eq!(b.in_use(), 0);
    }
}
