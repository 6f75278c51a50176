use super::*;
use crate::Planner;
use crate::tests::{bits, count, int, ints, run, tricky_input, typed, value_info};
use tract_onnx::pb;
use tract_onnx::prelude::DatumExt;

/// One ONNX MaxPool over an f32 input of `shape`, with `attributes`; `indices` asks for its
/// second output. Typed by tract as the engine types a model.
fn max_pool(shape: &[i64], attributes: Vec<pb::AttributeProto>, indices: bool) -> TypedModel {
    let mut outputs = vec!["y".to_string()];
    if indices {
        outputs.push("i".into());
    }
    typed(pb::GraphProto {
        name: "pool".into(),
        node: vec![pb::NodeProto {
            input: vec!["x".into()],
            output: outputs.clone(),
            name: "pool".into(),
            op_type: "MaxPool".into(),
            attribute: attributes,
            ..Default::default()
        }],
        input: vec![value_info("x", shape)],
        // Untyped outputs: tract infers their shapes.
        output: outputs
            .into_iter()
            .map(|name| pb::ValueInfoProto {
                name,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

fn stride_2(extra: &[pb::AttributeProto]) -> Vec<pb::AttributeProto> {
    let mut a = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
    a.extend_from_slice(extra);
    a
}

#[test]
fn stride_2_pools_are_replaced_and_compute_tracts_values_bit_for_bit() {
    let cases: [(&[i64], Vec<pb::AttributeProto>); 6] = [
        (&[1, 3, 7, 9], stride_2(&[])),
        (&[2, 4, 6, 8], stride_2(&[])),
        (&[1, 1, 2, 2], stride_2(&[])),
        (&[1, 1, 3, 2], stride_2(&[])),
        (&[1, 2, 128, 130], stride_2(&[])),
        (&[1, 5, 9, 6], stride_2(&[ints("pads", &[0, 0, 0, 0])])),
    ];
    for (shape, attributes) in cases {
        let tracts = Planner::tract()
            .optimize(max_pool(shape, attributes.clone(), false))
            .unwrap();
        let ours = Planner::new([])
            .unwrap()
            .optimize(max_pool(shape, attributes, false))
            .unwrap();
        assert_eq!(tracts.max_pools, 0);
        assert_eq!(count::<OptMaxPool>(&tracts.model), 1, "{shape:?}");
        assert_eq!(ours.max_pools, 1, "{shape:?}");
        assert_eq!(count::<MaxPool2x2>(&ours.model), 1, "{shape:?}");
        assert_eq!(count::<OptMaxPool>(&ours.model), 0, "{shape:?}");
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let x = tricky_input(&dims);
        let (theirs, mine) = (run(tracts.model, &x), run(ours.model, &x));
        assert_eq!(bits(&theirs), bits(&mine), "{shape:?}");
    }
}

#[test]
fn every_other_pool_stays_tracts() {
    let cases: [(&[i64], Vec<pb::AttributeProto>, bool); 6] = [
        // Stride 1 (tract vectorises that one itself).
        (&[1, 2, 8, 8], vec![ints("kernel_shape", &[2, 2])], false),
        // A 3 × 3 window.
        (
            &[1, 2, 9, 9],
            vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2])],
            false,
        ),
        // Padded.
        (
            &[1, 2, 8, 8],
            stride_2(&[ints("pads", &[0, 0, 1, 1])]),
            false,
        ),
        // Ceil mode over an odd size: one more row and column than a valid pool.
        (&[1, 2, 7, 7], stride_2(&[int("ceil_mode", 1)]), false),
        // Dilated.
        (
            &[1, 2, 8, 8],
            stride_2(&[ints("dilations", &[2, 2])]),
            false,
        ),
        // With its indices output.
        (&[1, 2, 8, 8], stride_2(&[]), true),
    ];
    for (shape, attributes, indices) in cases {
        let model = max_pool(shape, attributes, indices);
        let ours = Planner::new([]).unwrap().optimize(model).unwrap();
        assert_eq!(ours.max_pools, 0, "{shape:?} replaced");
        assert_eq!(count::<MaxPool2x2>(&ours.model), 0, "{shape:?}");
    }
}

/// tract's plan of a 2 × 2 stride-2 pool over a [1, 2, 4, 4] input, and its pool's node id.
fn tracts_1x2x4x4() -> (TypedModel, usize) {
    let model = Planner::tract()
        .optimize(max_pool(&[1, 2, 4, 4], stride_2(&[]), false))
        .unwrap()
        .model;
    let id = model
        .nodes()
        .iter()
        .find(|n| n.op_is::<OptMaxPool>())
        .unwrap()
        .id;
    (model, id)
}

/// The op for a [1, 2, 4, 4] input, as the planner makes it.
fn op_for_1x2x4x4() -> MaxPool2x2 {
    let (model, id) = tracts_1x2x4x4();
    let node = model.node(id);
    let fact = model.outlet_fact(node.inputs[0]).unwrap();
    MaxPool2x2::for_node(fact, node.op_as::<OptMaxPool>().unwrap()).unwrap()
}

#[test]
fn a_run_on_another_input_is_an_error_not_a_panic() {
    let op = op_for_1x2x4x4();
    let ctx = EvalContext::out_of_plan();
    let fits = Tensor::zero::<f32>(&[1, 2, 4, 4]).unwrap();
    let out = op.eval(&ctx, tvec!(fits.clone().into())).unwrap();
    assert_eq!(out[0].shape(), &[1, 2, 2, 2]);

    let larger = Tensor::zero::<f32>(&[1, 2, 6, 6]).unwrap();
    assert!(op.eval(&ctx, tvec!(larger.into())).is_err());
    let ints = Tensor::zero::<i32>(&[1, 2, 4, 4]).unwrap();
    assert!(op.eval(&ctx, tvec!(ints.into())).is_err());
    assert!(op.eval(&ctx, tvec!()).is_err());
    assert!(
        op.eval(&ctx, tvec!(fits.clone().into(), fits.into()))
            .is_err()
    );
}

#[test]
fn planes_split_anywhere_pool_as_the_whole() {
    // Five planes of 5 × 6 (an odd row dropped): the output split at every plane boundary, as
    // tract's threads may split it, gives what one pass gives.
    let (h, w, planes) = (5, 6, 5);
    let x = tricky_input(&[planes, h, w]);
    let input = x.to_plain_array_view::<f32>().unwrap();
    let input = input.as_slice().unwrap();
    let plane_out = (h / 2) * (w / 2);
    let mut whole = vec![0f32; planes * plane_out];
    pool_chunk(input, 0, &mut whole, h, w).unwrap();
    for split in 1..planes {
        let mut parts = vec![0f32; planes * plane_out];
        let (a, b) = parts.split_at_mut(split * plane_out);
        pool_chunk(input, 0, a, h, w).unwrap();
        pool_chunk(input, split, b, h, w).unwrap();
        let to_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(to_bits(&parts), to_bits(&whole), "split at {split}");
    }
    // A chunk that is not whole planes, or reaches past the input: refused.
    assert!(pool_chunk(input, 0, &mut vec![0f32; plane_out + 1], h, w).is_err());
    assert!(pool_chunk(input, planes, &mut vec![0f32; plane_out], h, w).is_err());
    assert!(pool_chunk(input, usize::MAX, &mut vec![0f32; plane_out], h, w).is_err());
}

#[test]
fn on_two_intra_op_threads_the_planes_are_split_and_pool_the_same() {
    // 8 × 64 × 64 output values: at tract's threshold for splitting the planes over threads
    // (32768), so each of the two threads takes some of them.
    let shape = [1i64, 8, 128, 128];
    let x = tricky_input(&[1, 8, 128, 128]);
    let tracts = Planner::tract()
        .optimize(max_pool(&shape, stride_2(&[]), false))
        .unwrap()
        .model;
    let ours = Planner::new([])
        .unwrap()
        .optimize(max_pool(&shape, stride_2(&[]), false))
        .unwrap()
        .model;
    assert_eq!(count::<MaxPool2x2>(&ours), 1);
    crate::tests::assert_same_bits_on_two_threads(tracts, ours, &x);
}

#[test]
fn a_declared_shape_whose_size_overflows_stays_tracts() {
    // A model may declare any dimensions: planes of 2^33 × 2^33 points overflow a usize, so the
    // op is not made (no product of them is ever formed unchecked).
    let (model, id) = tracts_1x2x4x4();
    let pool = model.node(id).op_as::<OptMaxPool>().unwrap();
    let huge = 1usize << 33;
    assert!(MaxPool2x2::for_node(&f32::fact([1, 2, huge, huge]), pool).is_none());
    assert!(MaxPool2x2::for_node(&f32::fact([1, 2, 4, 4]), pool).is_some());
}
