//! Randomness from the OS, for the seeds every sans-IO state machine is
//! given. One failure policy everywhere: an error the caller returns (a
//! daemon then refuses to start, or that one connection fails); never a
//! fallback to anything predictable.

use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the OS random number generator failed: {0}")]
pub struct SeedError(getrandom::Error);

/// 32 bytes from the OS's CSPRNG.
pub fn os_seed() -> Result<[u8; 32], SeedError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(SeedError)?;
    Ok(seed)
}

/// Fills `out` (a key being made, say) straight from the OS's CSPRNG.
pub fn fill(out: &mut [u8]) -> Result<(), SeedError> {
    getrandom::getrandom(out).map_err(SeedError)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_differ() {
        assert_ne!(super::os_seed().unwrap(), super::os_seed().unwrap());
    }
}
