//! The panics that generated build functions raise on purpose, and a panic hook that keeps
//! them out of the test output (every other panic is reported as usual).

use std::sync::Once;

/// The payload of a panic raised on purpose by a generated build function. The store must
/// resume it unchanged; the tag tells which step raised it.
#[derive(Debug)]
pub(crate) struct HarnessPanic(pub u64);

/// Installs (once per process) a hook that stays silent for [`HarnessPanic`] payloads and
/// hands every other panic to the hook that was installed before.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<HarnessPanic>().is_none() {
                previous(info);
            }
        }));
    });
}
