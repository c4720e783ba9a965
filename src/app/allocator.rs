//! glibc malloc settings for a long-running process that allocates many
//! short-lived large Arrow buffers.
//!
//! By default glibc raises its mmap threshold each time a large block is
//! freed, after which blocks of that size come from the heap and the heap
//! fragments; with one arena per thread (up to 8 per core) the process's
//! resident memory then grows with how long it runs rather than with what
//! it holds. Measured (benchmark harness, 1M-change drain into ClickHouse):
//! peak RSS 115-139 MiB with the defaults, 57-85 MiB with these (three
//! runs each).

/// Blocks at least this large are mmapped and given back when freed
/// (fixing it also stops glibc from moving it).
pub const MMAP_THRESHOLD: i32 = 256 << 10;
/// Free heap above this is returned to the system.
pub const TRIM_THRESHOLD: i32 = 1 << 20;
/// At most this many malloc arenas (the default is 8 per core).
pub const ARENA_MAX: i32 = 2;

/// Applies the settings above, except those the user set through glibc's
/// own environment variables (`MALLOC_MMAP_THRESHOLD_`, ...), which win.
/// Call first thing in `main`, before threads start.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            (
                libc::M_MMAP_THRESHOLD,
                MMAP_THRESHOLD,
                "MALLOC_MMAP_THRESHOLD_",
            ),
            (
                libc::M_TRIM_THRESHOLD,
                TRIM_THRESHOLD,
                "MALLOC_TRIM_THRESHOLD_",
            ),
            (libc::M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
        ];
        for (param, value, env) in settings {
            if std::env::var_os(env).is_none() {
                // SAFETY: mallopt only changes allocator parameters; it is
                // called before any other thread exists.
                unsafe {
                    libc::mallopt(param, value);
                }
            }
        }
    }
}
