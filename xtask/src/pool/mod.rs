//! File-backed test pools that xtask creates, lists and destroys (`cargo xtask pool ...`), and
//! that conformance runs use.

mod name;
mod ops;
mod registry;

pub use name::{DEFAULT_PREFIX, PoolName, parse_size};
pub use ops::{create, destroy, exists, imported, list, property, why_not_empty};
pub use registry::{OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolRecord};

use crate::error::{Result, XtaskError};
use crate::runner::Runner;

/// The prefix for generated names: `--prefix`, else `ZSTORE_POOL_PREFIX`, else
/// [`DEFAULT_PREFIX`].
pub fn prefix(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("ZSTORE_POOL_PREFIX").ok())
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned())
}

/// A pool name nobody uses yet (neither imported nor recorded).
pub async fn fresh_name(runner: &Runner, dir: &PoolDir, prefix: &str) -> Result<PoolName> {
    let taken = imported(runner).await?;
    for attempt in 0..16 {
        let name = PoolName::unique(prefix, attempt)?;
        if !taken.iter().any(|t| t == name.as_str()) && dir.load(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(XtaskError::Invalid(format!(
        "could not find an unused pool name with prefix {prefix:?}"
    )))
}
