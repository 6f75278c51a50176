use super::*;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// ONNX `TensorProto.DataType.FLOAT` and `AttributeProto.AttributeType` INT and INTS.
const FLOAT: i32 = 1;
const INT: i32 = 2;
const INTS: i32 = 7;

pub(crate) fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: INTS,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: INT,
        i: value,
        ..Default::default()
    }
}
/// The input's height and width: the output row of a padded 3 × 3 convolution is as long, which
/// is the shortest row tract makes direct (128).
const HW: i64 = 128;

pub(crate) fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
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

/// Deterministic weights in ±0.2 (an LCG), so that every convolution's output stays in range.
fn weights(name: &str, dims: &[i64], seed: u64) -> pb::TensorProto {
    let count: i64 = dims.iter().product();
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let values = (0..count).flat_map(|_| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4).to_le_bytes()
    });
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: values.collect(),
        ..Default::default()
    }
}

/// A chain of padded 3 × 3 convolutions (+ Relu) through `channels` (the first is the input's),
/// on a 128 × 128 input, typed by tract from its ONNX form as the engine types a model.
fn conv_chain(channels: &[i64]) -> TypedModel {
    let mut nodes = Vec::new();
    let mut initializer = Vec::new();
    let mut x = "input".to_string();
    for (i, pair) in channels.windows(2).enumerate() {
        let [cin, cout] = [pair[0], pair[1]];
        let (w, b) = (format!("w{i}"), format!("b{i}"));
        initializer.push(weights(&w, &[cout, cin, 3, 3], 2 * i as u64));
        initializer.push(weights(&b, &[cout], 2 * i as u64 + 1));
        let conv = format!("conv{i}");
        nodes.push(pb::NodeProto {
            input: vec![x.clone(), w, b],
            output: vec![conv.clone()],
            name: conv.clone(),
            op_type: "Conv".into(),
            attribute: vec![pb::AttributeProto {
                name: "pads".into(),
                r#type: INTS,
                ints: vec![1, 1, 1, 1],
                ..Default::default()
            }],
            ..Default::default()
        });
        let relu = format!("relu{i}");
        nodes.push(pb::NodeProto {
            input: vec![conv],
            output: vec![relu.clone()],
            name: relu.clone(),
            op_type: "Relu".into(),
            ..Default::default()
        });
        x = relu;
    }
    let last = *channels.last().unwrap();
    typed(pb::GraphProto {
        name: "convs".into(),
        node: nodes,
        initializer,
        input: vec![value_info("input", &[1, channels[0], HW, HW])],
        output: vec![value_info(&x, &[1, last, HW, HW])],
        ..Default::default()
    })
}

/// `graph` in an opset-13 ONNX model, typed by tract as the engine types a model.
pub(crate) fn typed(graph: pb::GraphProto) -> TypedModel {
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .unwrap()
        .into_typed()
        .unwrap()
}

pub(crate) fn count<T: Op>(model: &TypedModel) -> usize {
    model.nodes().iter().filter(|n| n.op_is::<T>()).count()
}

/// Runs `model` on one input; its first output.
pub(crate) fn run(model: TypedModel, input: &Tensor) -> Tensor {
    let plan = model.into_runnable().unwrap();
    let mut out = plan.run(tvec!(input.clone().into())).unwrap();
    out.remove(0).into_tensor()
}

/// Values in ±100 with every special a max can meet: NaN, ±∞, f32::MIN, and one window of
/// four NaNs (its maximum is tract's start value, f32::MIN). No −0.0: which of ±0 a max keeps is
/// not specified, in tract's loop or here.
/// Runs tract's plan and ours of one model on `x` under tract's executor with two intra-op
/// threads (as the engine's `--intra-op-threads 2` runs a plan), and asserts that ours gives
/// tract's bits there and its own bits alone.
pub(crate) fn assert_same_bits_on_two_threads(tracts: TypedModel, ours: TypedModel, x: &Tensor) {
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    let alone = run(ours.clone(), x);
    let pool = Executor::multithread(2);
    let (theirs, mine) = multithread_tract_scope(pool, || (run(tracts, x), run(ours, x)));
    assert_eq!(bits(&mine), bits(&theirs));
    assert_eq!(bits(&mine), bits(&alone));
}

pub(crate) fn tricky_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data: Vec<f32> = (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 200.0;
            match i % 41 {
                3 => f32::NAN,
                7 => f32::INFINITY,
                11 => f32::NEG_INFINITY,
                19 => f32::MIN,
                _ => v,
            }
        })
        .collect();
    let w = shape[shape.len() - 1];
    if shape[shape.len() - 2] >= 2 && w >= 2 {
        for at in [0, 1, w, w + 1] {
            data[at] = f32::NAN;
        }
    }
    Tensor::from_shape(shape, &data).unwrap()
}

pub(crate) fn bits(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    let v = t.to_plain_array_view::<f32>().unwrap();
    (t.shape().to_vec(), v.iter().map(|x| x.to_bits()).collect())
}

fn input(channels: usize) -> Tensor {
    let n = channels * (HW * HW) as usize;
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    Tensor::from_shape(&[1, channels, HW as usize, HW as usize], &data).unwrap()
}

/// Plans `channels` both ways; returns the direct spatial convolutions in tract's plan and in
/// the narrowed one, after checking that the two plans compute the same thing and that no
/// convolution is left unlowered.
#[cfg(target_arch = "x86_64")]
fn direct_both_ways(channels: &[i64]) -> (usize, usize) {
    let tracts = Planner::tract()
        .optimize(conv_chain(channels))
        .unwrap()
        .model;
    let ours = Planner::new([])
        .unwrap()
        .optimize(conv_chain(channels))
        .unwrap()
        .model;
    assert_eq!(count::<Conv>(&ours), 0, "a convolution left unlowered");
    let direct = (
        count::<DirectSpatialConv>(&tracts),
        count::<DirectSpatialConv>(&ours),
    );
    let x = input(channels[0] as usize);
    let (a, b) = (run(tracts, &x), run(ours, &x));
    let (a, b) = (
        a.to_plain_array_view::<f32>().unwrap(),
        b.to_plain_array_view::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let worst = a
        .iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "plans disagree by {worst} (scale {scale})"
    );
    direct
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_wide_convolution_becomes_a_matrix_product_and_a_thin_one_stays_direct() {
    // 3 → 32 (27 inputs per point) stays direct; 32 → 32 (288) is what the narrowing is for.
    assert_eq!(direct_both_ways(&[3, 32, 32]), (2, 1));
    let planned = Planner::new([])
        .unwrap()
        .optimize(conv_chain(&[3, 32, 32]))
        .unwrap();
    assert_eq!(planned.narrowed, 1);
    let ours = Planner::new([])
        .unwrap()
        .optimize(conv_chain(&[3, 32, 32]))
        .unwrap()
        .model;
    assert_eq!(
        count::<tract_onnx::tract_core::ops::matmul::optimized::OptMatMul>(&ours),
        1
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_rule_holds_at_its_thresholds() {
    // 4 × 9 = 36 inputs per point: kept direct; 5 × 9 = 45: narrowed.
    assert_eq!(direct_both_ways(&[4, 32]), (1, 1));
    assert_eq!(direct_both_ways(&[5, 32]), (1, 0));
    // Fewer than 32 output channels: tract's choice, up to 143 inputs per point from 16 output
    // channels (12 × 9 = 108: kept; 16 × 9 = 144: narrowed), whatever the inputs below 16.
    assert_eq!(direct_both_ways(&[12, 16]), (1, 1));
    assert_eq!(direct_both_ways(&[16, 16]), (1, 0));
    assert_eq!(direct_both_ways(&[32, 16]), (1, 0));
    assert_eq!(direct_both_ways(&[32, 15]), (1, 1));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn naming_the_knob_gives_tracts_own_choice() {
    let keep = Planner::new([(DIRECT_SPATIAL_KNOB, "false")]).unwrap();
    assert!(!keep.narrows_direct_spatial());
    assert!(Planner::new([]).unwrap().narrows_direct_spatial());
    let planned = keep.optimize(conv_chain(&[3, 32, 32])).unwrap().model;
    assert_eq!(count::<DirectSpatialConv>(&planned), 2);

    // With the knob on, in the operator's scope around the load, nothing is direct.
    let all_off = Planner::new([(DIRECT_SPATIAL_KNOB, "true")]).unwrap();
    let scope = KnobScope::new([(DIRECT_SPATIAL_KNOB, "true")]).unwrap();
    let planned = scope
        .enter(|| all_off.optimize(conv_chain(&[3, 32, 32])))
        .unwrap()
        .model;
    assert_eq!(count::<DirectSpatialConv>(&planned), 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_operators_other_knobs_stay_in_force_for_the_narrowed_convolutions() {
    // Eager im2col instead of lazy: tract's knobs, set by the operator, must still apply to a
    // convolution lowered in the narrowing's own scope (which replaces the operator's).
    let knob = [
        ("TRACT_LAZY_IM2COL_MIN_KERNEL", "100"),
        ("TRACT_LAZY_IM2COL_MAX_EAGER_BYTES", "1000000000"),
    ];
    let scope = KnobScope::new(knob).unwrap();
    let planner = Planner::new(knob).unwrap();
    let planned = scope
        .enter(|| planner.optimize(conv_chain(&[32, 32])))
        .unwrap()
        .model;
    use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
    assert_eq!(count::<DirectSpatialConv>(&planned), 0);
    assert_eq!(
        count::<Im2Col>(&planned),
        1,
        "the operator's knob was dropped"
    );
}

#[test]
fn knobs_tract_refuses_are_refused() {
    assert!(Planner::new([("TRACT_NO_SUCH_KNOB", "1")]).is_err());
    assert!(Planner::new([(DIRECT_SPATIAL_KNOB, "sideways")]).is_err());
}

#[cfg(not(target_arch = "x86_64"))]
#[test]
fn elsewhere_tracts_choice_is_kept() {
    assert!(!Planner::new([]).unwrap().narrows_direct_spatial());
}
