//! The stand-in for `large.onnx` when `scripts/make_bench_models.py` has not been run: the same
//! shape of model (dense layers, ~100 MB of f32 weights), encoded with tract's own ONNX protobuf
//! types so that the load measurement has something real to load.
//!
//! Graph (ONNX opset 13, IR version 8): `input` f32 [1, D] → (MatMul W_i [D, D] → Add b_i [D] →
//! Relu) × L → `output` f32 [1, D]. Weights are deterministic (an LCG), uniform in ±1/√D.

use prost::Message;
use tract_onnx::pb;

/// What [`large_model`] builds, for the report.
pub(super) const DESCRIPTION: &str = "4 × (MatMul 2560×2560 + Add + Relu), 105 MB of f32 weights";

/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// ~100 MB: 4 layers of 2560 × 2560 f32.
pub(super) fn large_model() -> anyhow::Result<Vec<u8>> {
    model(4, 2560)
}

fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn initializer(name: &str, dims: &[i64], values: impl Iterator<Item = f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: values.flat_map(f32::to_le_bytes).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

/// `layers` dense layers of width `dim`, encoded as an ONNX `ModelProto`.
pub(super) fn model(layers: usize, dim: usize) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(layers > 0 && dim > 0, "empty model");
    let d = i64::try_from(dim)?;
    let scale = 1.0 / (dim as f32).sqrt();
    // Knuth's MMIX LCG; the top 24 bits make a uniform f32 in [0, 1).
    let mut state: u64 = 0x5eed_5eed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    };
    let mut nodes = Vec::new();
    let mut weights = Vec::new();
    let mut x = "input".to_string();
    for i in 0..layers {
        let (w, b) = (format!("w{i}"), format!("b{i}"));
        weights.push(initializer(&w, &[d, d], (0..dim * dim).map(|_| next())));
        weights.push(initializer(&b, &[d], (0..dim).map(|_| next())));
        let (mm, add) = (format!("matmul{i}"), format!("add{i}"));
        let out = if i + 1 == layers {
            "output".to_string()
        } else {
            format!("relu{i}")
        };
        nodes.push(node("MatMul", &[&x, &w], &mm));
        nodes.push(node("Add", &[&mm, &b], &add));
        nodes.push(node("Relu", &[&add], &out));
        x = out;
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "sealed-bench micro".into(),
        graph: Some(pb::GraphProto {
            name: "dense".into(),
            node: nodes,
            initializer: weights,
            input: vec![value_info("input", &[1, d])],
            output: vec![value_info("output", &[1, d])],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    #[test]
    fn generated_model_runs_as_dense_relu_layers() {
        let bytes = model(2, 3).unwrap();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(&bytes))
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tensor2(&[[1.0f32, -2.0, 0.5]]);
        let y = plan.run(tvec!(x.into())).unwrap();
        let y = y[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(y.shape(), &[1, 3]);

        // The same forward pass by hand from the generated weights.
        let proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = proto.graph.unwrap();
        let floats = |t: &pb::TensorProto| -> Vec<f32> {
            t.raw_data
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let mut v = vec![1.0f32, -2.0, 0.5];
        for layer in graph.initializer.chunks(2) {
            let (w, b) = (floats(&layer[0]), floats(&layer[1]));
            v = (0..3)
                .map(|j| {
                    let s: f32 = (0..3).map(|k| v[k] * w[k * 3 + j]).sum::<f32>() + b[j];
                    s.max(0.0)
                })
                .collect();
        }
        for (got, want) in y.iter().zip(&v) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }
}
