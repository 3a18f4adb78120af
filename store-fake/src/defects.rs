//! Deliberately broken variants of the fake, for testing crash-safety checks (feature
//! `test-defects`): a suite that claims to catch crash bugs must fail each of these.

/// A known crash-safety bug the fake can be opened with
/// ([`FakeStoreBuilder::crash_defect`](crate::FakeStoreBuilder::crash_defect)). Each one
/// changes the order or the bookkeeping of the fake's filesystem [`Step`](crate::Step)s the
/// way real stores have got them wrong; without a fault the store still behaves correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(not(feature = "test-defects"), allow(dead_code))]
pub enum CrashDefect {
    /// Publishing a cache copy first removes the old version, then renames the copy into
    /// place (OBuilder's ZFS release renames the old version away first): a crash or a failed
    /// step in between leaves the cache with no version at all.
    ReleaseRemovesOldVersionFirst,
    /// Opening the root does not empty the scratch directories, so what a crash left half-made
    /// (build directories, copies, half-removed trees) stays forever.
    OpenKeepsScratch,
    /// Acquiring a copy counts it as out before copying, and does not count it back when the
    /// copy fails (OBuilder's leaked clone counter): `delete_cache` is then `Busy` forever.
    AcquireLeaksCountOnFailure,
}
