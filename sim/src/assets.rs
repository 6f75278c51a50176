//! The bundled model (`sim/assets/digits`): an MLP trained on scikit-learn's 8×8 digits, real
//! held-out inputs as `.npy`, and the outputs the model must give (`expected.json`, made by
//! `scripts/make_digits_model.py`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

/// Default assets directory: the one in the source tree.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// One input file and what the model must answer for it.
#[derive(Debug, Clone)]
pub struct Example {
    pub file: PathBuf,
    pub true_labels: Vec<i64>,
    pub predicted_labels: Vec<i64>,
}

/// The digits model and its examples.
pub struct Digits {
    pub model: PathBuf,
    pub model_sha384: String,
    pub examples: Vec<Example>,
}

impl Digits {
    pub fn load(assets: &Path) -> Result<Digits> {
        let dir = assets.join("digits");
        let expected_path = dir.join("expected.json");
        let text = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("reading {}", expected_path.display()))?;
        let v: Value = serde_json::from_str(&text).context("parsing expected.json")?;
        let labels = |e: &Value, key: &str| -> Result<Vec<i64>> {
            e.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("expected.json: missing {key}"))?
                .iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| anyhow!("expected.json: bad {key}"))
                })
                .collect()
        };
        let inputs = v
            .get("inputs")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("expected.json: missing inputs"))?;
        let mut examples = Vec::new();
        for (name, e) in inputs {
            examples.push(Example {
                file: dir.join(name),
                true_labels: labels(e, "true_labels")?,
                predicted_labels: labels(e, "predicted_labels")?,
            });
        }
        examples.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(Digits {
            model: dir.join("digits.onnx"),
            model_sha384: v
                .get("model_sha384")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            examples,
        })
    }
}
