//! Randomness from the operating system.

/// Fills `buf` from the kernel's CSPRNG. Failure of getrandom(2) leaves no
/// safe way to continue, so it aborts rather than returning predictable bytes.
pub fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        eprintln!("hushfs: the operating system's random source failed: {e}");
        std::process::abort();
    }
}

pub fn array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    fill(&mut a);
    a
}
