//! `sealed-sim measure`: the measurements a simulation enclave binary will attest, written in the
//! format `nitro-cli build-enclave` and `nitro-cli describe-eif` print for a real image
//! (`{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": …, "PCR1": …, "PCR2": …}}`),
//! so that the tools that read a release's `measurements.json` (client policy files, the KMS key
//! policy templates) can be exercised against the simulation.
//!
//! The values are the mock NSM's, computed by the same code the simulation enclave uses
//! (`sealed_mock_ca::measure`): PCR0 is the SHA-384 of the enclave binary file (the mock measures
//! `current_exe()`), PCR1 and PCR2 the SHA-384 of two fixed labels. The enclave's
//! `tests/measure.rs` checks them against a real mock NSM document.
//!
//! What it does not do: measure an EIF. Real PCRs come from `nitro-cli` (scripts/build-eif.sh).

use std::path::Path;

use anyhow::{Context, Result};

pub use sealed_mock_ca::measure::{PCR1_LABEL, PCR2_LABEL};
/// `HashAlgorithm` exactly as nitro-cli prints it (the Debug form of its `Sha384` type).
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// PCR0, PCR1 and PCR2 of one enclave image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurements {
    pub pcr0: [u8; 48],
    pub pcr1: [u8; 48],
    pub pcr2: [u8; 48],
}

impl Measurements {
    /// What the mock NSM of the simulation enclave `binary` reports. The file is read in chunks,
    /// never held whole.
    pub fn of_simulation_enclave(binary: &Path) -> Result<Measurements> {
        let pcr0 = sealed_mock_ca::measure::image_digest(binary)
            .with_context(|| format!("measuring the enclave binary {}", binary.display()))?;
        Ok(Measurements {
            pcr0,
            pcr1: sealed_mock_ca::measure::pcr1(),
            pcr2: sealed_mock_ca::measure::pcr2(),
        })
    }

    /// `(index, value)` for PCR0..2.
    pub fn pcrs(&self) -> [(u16, [u8; 48]); 3] {
        [(0, self.pcr0), (1, self.pcr1), (2, self.pcr2)]
    }

    /// The nitro-cli JSON (lowercase hex, as nitro-cli prints), pretty-printed with a final newline.
    pub fn to_nitro_cli_json(&self) -> String {
        let value = serde_json::json!({
            "Measurements": {
                "HashAlgorithm": HASH_ALGORITHM,
                "PCR0": hex::encode(self.pcr0),
                "PCR1": hex::encode(self.pcr1),
                "PCR2": hex::encode(self.pcr2),
            }
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// `sealed-sim measure --enclave BIN [--out FILE]`: prints the JSON, or writes it to `out` and
/// prints the PCRs.
pub fn run(enclave: &Path, out: Option<&Path>) -> Result<()> {
    let measurements = Measurements::of_simulation_enclave(enclave)?;
    let json = measurements.to_nitro_cli_json();
    match out {
        None => print!("{json}"),
        Some(path) => {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "simulation enclave measurements (mock NSM; not a Nitro image) written to {}",
                path.display()
            );
            for (index, value) in measurements.pcrs() {
                println!("PCR{index}: {}", hex::encode(value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha384};
    use std::io::Write;

    #[test]
    fn pcr0_is_the_sha384_of_the_file_and_pcr1_2_are_fixed() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        // Larger than one read chunk, so the streaming path joins chunks correctly.
        let image: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&image).unwrap();
        file.flush().unwrap();
        let m = Measurements::of_simulation_enclave(file.path()).unwrap();
        assert_eq!(m.pcr0.as_slice(), Sha384::digest(&image).as_slice());
        assert_eq!(m.pcr1.as_slice(), Sha384::digest(PCR1_LABEL).as_slice());
        assert_eq!(m.pcr2.as_slice(), Sha384::digest(PCR2_LABEL).as_slice());
        assert_ne!(m.pcr1, m.pcr2);

        file.write_all(b"one more byte").unwrap();
        file.flush().unwrap();
        let changed = Measurements::of_simulation_enclave(file.path()).unwrap();
        assert_ne!(changed.pcr0, m.pcr0);
        assert_eq!((changed.pcr1, changed.pcr2), (m.pcr1, m.pcr2));
    }

    #[test]
    fn json_has_the_nitro_cli_shape() {
        let m = Measurements {
            pcr0: [0xab; 48],
            pcr1: [0x01; 48],
            pcr2: [0xff; 48],
        };
        let text = m.to_nitro_cli_json();
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let inner = value["Measurements"].as_object().unwrap();
        assert_eq!(
            inner.keys().collect::<Vec<_>>(),
            ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
        );
        assert_eq!(inner["HashAlgorithm"], "Sha384 { ... }");
        assert_eq!(inner["PCR0"], "ab".repeat(48));
        assert_eq!(inner["PCR1"], "01".repeat(48));
        assert_eq!(inner["PCR2"], "ff".repeat(48));
    }

    #[test]
    fn a_missing_binary_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-enclave");
        let err = Measurements::of_simulation_enclave(&path).unwrap_err();
        assert!(format!("{err:#}").contains("no-such-enclave"), "{err:#}");
    }

    #[test]
    fn run_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("enclave");
        std::fs::write(&image, b"enclave bytes").unwrap();
        let out = dir.path().join("measurements.json");
        run(&image, Some(&out)).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        let m = Measurements::of_simulation_enclave(&image).unwrap();
        assert_eq!(written, m.to_nitro_cli_json());
    }
}
