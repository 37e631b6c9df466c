//! The allocator of Strata's daemons, and the thread that gives the
//! memory they free back to the system.
//!
//! The daemons allocate with mimalloc ([`Allocator`], declared by each
//! binary as its `#[global_allocator]`). mimalloc gives freed memory back
//! (`madvise(MADV_DONTNEED)`) a second after it was freed, in whichever
//! thread next frees a page of its own once that second has passed, and
//! then all of it at once. In a master at 50,000 agents that thread was
//! nearly always the master's own, and the freeing cost it 10 to 26 ms
//! every two seconds inside whatever input it was handling (a status
//! update, an accept: perf showed the kernel's page unmapping under
//! mimalloc's purge in nearly every turn over 10 ms). [`give_back_freed_memory`]
//! starts a thread that does the giving back itself, every
//! [`GIVE_BACK_EVERY`], so the deadline never passes on another thread
//! unless this one has been kept off a core for half a second. It gives
//! back what was freed since its last turn too, not only what waited a
//! second: memory freed and taken again within a second may be faulted
//! back in once more, a page at a time, where it was taken.

// The calls into mimalloc's C interface below are this module's only
// unsafe code.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::time::Duration;

/// The allocator of the `strata` binary and the benchmarks: mimalloc,
/// built without asking for transparent huge pages.
pub use mimalloc::MiMalloc as Allocator;

/// How often the thread gives freed memory back: half of mimalloc's
/// delay (its `purge_delay`, 1,000 ms in mimalloc 3), so memory freed
/// since its last turn is given back before the delay runs out on a
/// thread that is doing real work.
pub const GIVE_BACK_EVERY: Duration = Duration::from_millis(500);

/// Starts, once a process, the thread that gives memory freed through
/// [`Allocator`] back to the system every [`GIVE_BACK_EVERY`]; later
/// calls say how the first went. It is meant for processes whose global
/// allocator is [`Allocator`]; in another it finds nothing to give back.
pub fn give_back_freed_memory() -> std::io::Result<()> {
    static STARTED: OnceLock<Result<(), std::io::ErrorKind>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("give-back".into())
            .spawn(|| {
                // A thread that has allocated nothing through mimalloc has
                // no heap of its own, and collecting with none does
                // nothing at all.
                // SAFETY: mi_thread_init takes no arguments and may be
                // called on any thread, more than once.
                unsafe { libmimalloc_sys::mi_thread_init() };
                loop {
                    std::thread::sleep(GIVE_BACK_EVERY);
                    give_back_now();
                }
            })
            .map(drop)
            .map_err(|error| error.kind())
    });
    started.map_err(std::io::Error::from)
}

/// Gives back, on the calling thread, every page mimalloc holds free,
/// without waiting for its delay (the forced collection of
/// `mi_collect(true)`: this thread's own free pages, then every arena's
/// pages waiting to be given back).
fn give_back_now() {
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};
    use std::os::unix::fs::FileExt as _;
    use std::time::Instant;

    /// The page size, from the auxiliary vector (AT_PAGESZ, 6).
    fn page_size() -> usize {
        let auxv = std::fs::read("/proc/self/auxv").expect("auxv reads");
        auxv.chunks_exact(16)
            .find_map(|pair| {
                let word = |at: usize| {
                    usize::from_ne_bytes(pair[at..at + 8].try_into().expect("eight bytes"))
                };
                (word(0) == 6).then(|| word(8))
            })
            .expect("the page size is in the auxiliary vector")
    }

    /// How many of the pages holding `addresses` are in memory, from the
    /// present bit of /proc/self/pagemap.
    fn resident(addresses: &[usize]) -> usize {
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap opens");
        let page = page_size();
        addresses
            .iter()
            .filter(|&&address| {
                let mut entry = [0u8; 8];
                pagemap
                    .read_exact_at(&mut entry, (address / page * 8) as u64)
                    .expect("a pagemap entry");
                u64::from_le_bytes(entry) >> 63 == 1
            })
            .count()
    }

    /// Memory freed through the allocator stays in memory until a thread
    /// gives it back, and the giving-back thread does within a few of
    /// its turns, with nothing else allocating through mimalloc (the
    /// test binary's own allocator is the system's).
    #[test]
    fn freed_memory_is_given_back_by_the_thread() {
        const BLOCK: usize = 64 * 1024;
        const BLOCKS: usize = 1024;
        let layout = Layout::from_size_align(BLOCK, 8).expect("a valid layout");
        let blocks: Vec<usize> = (0..BLOCKS)
            .map(|_| {
                // SAFETY: the layout has a non-zero size.
                let block = unsafe { Allocator.alloc(layout) };
                assert!(!block.is_null());
                // SAFETY: the block is BLOCK bytes, freshly allocated.
                unsafe { block.write_bytes(1, BLOCK) };
                block as usize
            })
            .collect();
        assert_eq!(resident(&blocks), BLOCKS);
        for &block in &blocks {
            // SAFETY: allocated above with the same layout, freed once.
            unsafe { Allocator.dealloc(block as *mut u8, layout) };
        }
        // The freed pages go back to mimalloc's arenas, not yet to the
        // system: this thread's collection without forcing, well within
        // mimalloc's delay.
        // SAFETY: as in give_back_now.
        unsafe { libmimalloc_sys::mi_collect(false) };
        let kept = resident(&blocks);
        assert!(
            kept > BLOCKS / 2,
            "given back before anyone asked: {kept} kept"
        );
        give_back_freed_memory().expect("the thread starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let kept = resident(&blocks);
            if kept < BLOCKS / 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kept} of {BLOCKS} blocks still in memory a minute later"
            );
            std::thread::sleep(GIVE_BACK_EVERY / 5);
        }
    }
}
