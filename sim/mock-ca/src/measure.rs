//! SIMULATION ONLY: the boot measurements of the mock NSM. The simulation enclave attests them and
//! `sealed-sim` predicts them (`sealed-sim measure`, the launcher's PCR0), from this one place so
//! that the two cannot drift apart.
//!
//! - PCR0 = SHA-384 of the enclave binary file (the real PCR0 measures the EIF; here the binary is
//!   the image), so rebuilding the binary changes PCR0 as it would on Nitro.
//! - PCR1 = SHA-384 of [`PCR1_LABEL`] (stands in for the kernel and boot ramfs).
//! - PCR2 = SHA-384 of [`PCR2_LABEL`] (stands in for the application measurement).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha384};

/// Text hashed into PCR1.
pub const PCR1_LABEL: &str = "sealed-inference MOCK PCR1: kernel and boot ramfs (simulation only)";
/// Text hashed into PCR2.
pub const PCR2_LABEL: &str = "sealed-inference MOCK PCR2: application (simulation only)";

/// PCR0 of the image at `path`: the SHA-384 of the file, read in bounded chunks (a debug enclave
/// binary is hundreds of MB; it is never held whole).
pub fn image_digest(path: &Path) -> io::Result<[u8; 48]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha384::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher.finalize().into())
}

/// PCR1 of every mock NSM.
pub fn pcr1() -> [u8; 48] {
    Sha384::digest(PCR1_LABEL.as_bytes()).into()
}

/// PCR2 of every mock NSM.
pub fn pcr2() -> [u8; 48] {
    Sha384::digest(PCR2_LABEL.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_digest_is_the_sha384_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        // Larger than one read buffer, so that chunking is exercised.
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let want: [u8; 48] = Sha384::digest(&bytes).into();
        assert_eq!(image_digest(&path).unwrap(), want);
        assert!(image_digest(&dir.path().join("missing")).is_err());
        assert_ne!(pcr1(), pcr2());
    }
}
