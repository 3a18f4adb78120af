//! [`ZfsSpec`]: the [crash test](conformance::crash)'s way to a ZFS store from another process.

use conformance::crash::StoreSpec;

use super::ZfsCase;
use crate::ZfsStore;

/// A store's dataset, which a crash test child opens with [`ZfsStore::open`] (the real `zfs`
/// command; on zfs-fuse every command takes the machine-wide daemon lock, as in production).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZfsSpec {
    dataset: String,
}

impl ZfsSpec {
    /// The store on `dataset`.
    pub fn new(dataset: impl Into<String>) -> Self {
        Self {
            dataset: dataset.into(),
        }
    }
}

/// Closes the factory's own handle on the case: from here on the crash test's processes
/// open the store (a second open of an open store is refused). The store the factory made
/// is fresh, with no background work to wait for.
impl From<&ZfsCase> for ZfsSpec {
    fn from(case: &ZfsCase) -> Self {
        drop(case.take_last());
        Self::new(case.dataset())
    }
}

#[async_trait::async_trait]
impl StoreSpec for ZfsSpec {
    type Store = ZfsStore;

    fn encode(&self) -> String {
        self.dataset.clone()
    }

    fn decode(line: &str) -> Result<Self, String> {
        Ok(Self::new(line))
    }

    async fn open(&self) -> Result<ZfsStore, String> {
        ZfsStore::open(&self.dataset)
            .await
            .map_err(|e| format!("opening ZfsStore on {}: {e}", self.dataset))
    }

    /// Waits for the cleanups of dropped copies, then [`ZfsStore::check`]s the layout.
    async fn leftovers(&self, store: &ZfsStore) -> Vec<String> {
        store.wait_idle().await;
        match store.check().await {
            Ok(found) => found,
            Err(e) => vec![format!("checking the layout of {}: {e}", self.dataset)],
        }
    }
}
