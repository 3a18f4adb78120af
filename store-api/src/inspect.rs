//! [`Inspect`]: what a store can list from its own index, for tests and tools.

use crate::{CacheName, Id};

/// Lists what a store holds, from its in-memory index (no I/O, no command run): the same
/// question asked of every backend with the same types, so a consumer's test can check a
/// store without knowing which backend it has. Both lists are sorted.
///
/// ```
/// use store_api::{Inspect, Id, StoreExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = store_fake::FakeStore::new()?;
/// let id = Id::new("a")?;
/// store.build(None, &id, |_| async { Ok::<_, std::io::Error>(()) }).await?;
/// assert_eq!(store.results(), [id]);
/// assert!(store.caches().is_empty());
/// # Ok(()) }
/// ```
pub trait Inspect {
    /// The ids that have a result.
    fn results(&self) -> Vec<Id>;

    /// The caches that exist (that a [`cache`](crate::Store::cache) call would not create).
    fn caches(&self) -> Vec<CacheName>;
}
