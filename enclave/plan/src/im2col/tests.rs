use super::*;
use crate::Planner;
use crate::tests::{bits, int, ints, run, tricky_input, typed, value_info};
use tract_onnx::pb;
use tract_onnx::prelude::{DatumExt, Tensor, ToDim};

/// One convolution of a model: its input shape (NCHW), output channels, kernel, strides,
/// dilations, pads (ONNX order: begins then ends), groups.
#[derive(Clone, Copy, Debug)]
struct Case {
    input: [i64; 4],
    out: i64,
    kernel: [i64; 2],
    strides: [i64; 2],
    dilations: [i64; 2],
    pads: [i64; 4],
    group: i64,
}

const fn case(input: [i64; 4], out: i64, kernel: i64, pad: i64) -> Case {
    Case {
        input,
        out,
        kernel: [kernel, kernel],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [pad; 4],
        group: 1,
    }
}

/// Convolutions tract lowers to its lazy im2col (kernel volume ≥ 6, output rows under 128 or
/// too many inputs per point for its direct convolution), chosen so that every panel kind
/// occurs whatever the kernel's panel width: output rows of 20 and 18 points (full panels
/// inside a row, full panels crossing a row's end, a narrower last panel), 6 points (panels
/// over several rows), a dilated and a 5 × 5 kernel, a strided one (no runs at all), an
/// asymmetric padding and a non-square input.
fn cases() -> Vec<Case> {
    vec![
        case([1, 8, 20, 20], 16, 3, 1),
        case([1, 3, 18, 18], 8, 3, 1),
        case([1, 4, 6, 6], 8, 3, 1),
        Case {
            dilations: [2, 2],
            pads: [2; 4],
            ..case([1, 4, 20, 20], 8, 3, 0)
        },
        case([1, 3, 30, 30], 8, 5, 2),
        Case {
            strides: [2, 2],
            ..case([1, 4, 17, 17], 8, 3, 1)
        },
        Case {
            pads: [0, 1, 2, 1],
            ..case([1, 2, 9, 23], 4, 3, 0)
        },
    ]
}

/// Weights in ±0.5 with a few specials, so that a wrong panel value changes the output.
fn weights(name: &str, dims: &[i64]) -> pb::TensorProto {
    let count: i64 = dims.iter().product();
    let values = (0..count).flat_map(|i| (((i * 37) % 101) as f32 / 101.0 - 0.5).to_le_bytes());
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        raw_data: values.collect(),
        ..Default::default()
    }
}

fn conv_model(c: &Case) -> TypedModel {
    let cin = c.input[1] / c.group;
    typed(pb::GraphProto {
        name: "conv".into(),
        node: vec![pb::NodeProto {
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec!["y".into()],
            name: "conv".into(),
            op_type: "Conv".into(),
            attribute: vec![
                ints("kernel_shape", &c.kernel),
                ints("strides", &c.strides),
                ints("dilations", &c.dilations),
                ints("pads", &c.pads),
                int("group", c.group),
            ],
            ..Default::default()
        }],
        initializer: vec![
            weights("w", &[c.out, cin, c.kernel[0], c.kernel[1]]),
            weights("b", &[c.out]),
        ],
        input: vec![value_info("x", &c.input)],
        output: vec![pb::ValueInfoProto {
            name: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// The planner with only this module's replacement on.
fn runs_only() -> Planner {
    Planner {
        max_pools: false,
        im2col_runs: true,
        im2col: None,
    }
}

fn input_of(c: &Case) -> Tensor {
    let dims: Vec<usize> = c.input.iter().map(|&d| d as usize).collect();
    tricky_input(&dims)
}

/// tract's plan of `c`, its lazy im2col node's op and input fact.
fn tracts_node(c: &Case) -> (TypedModel, usize) {
    let model = Planner::tract().optimize(conv_model(c)).unwrap().model;
    let id = model
        .nodes()
        .iter()
        .find(|n| n.op.name() == TRACT_OP_NAME)
        .unwrap_or_else(|| panic!("{c:?}: no lazy im2col in tract's plan"))
        .id;
    (model, id)
}

fn op_for(model: &TypedModel, id: usize) -> Option<Im2colRuns> {
    let node = model.node(id);
    let fact = model.outlet_fact(node.inputs[0]).unwrap();
    Im2colRuns::for_node(node.op.as_ref(), fact, &node.outputs[0].fact)
}

/// Every panel `value` writes, each into a buffer first filled with `0xa5` (so that what a
/// narrower last panel leaves alone is compared too).
fn panels(value: &dyn MMMInputValue) -> Vec<Vec<u8>> {
    let layout = value.scratch_panel_buffer_layout().unwrap();
    (0..value.panels_count())
        .map(|i| {
            let mut buffer =
                Blob::from_bytes_alignment(&vec![0xa5u8; layout.size()], layout.align()).unwrap();
            let at = buffer.as_bytes_mut().as_mut_ptr();
            assert_eq!(value.panel_bytes(i, Some(at)).unwrap(), at.cast_const());
            buffer.as_bytes().to_vec()
        })
        .collect()
}

fn packed(op: &dyn TypedOp, input: &Tensor) -> TValue {
    let mut out = op
        .eval(&EvalContext::out_of_plan(), tvec!(input.clone().into()))
        .unwrap();
    out.remove(0)
}

fn value(t: &TValue) -> &dyn MMMInputValue {
    let storage = t.try_storage_as::<PackedMatrixStorage>().unwrap();
    assert_eq!(storage.values().len(), 1);
    &*storage.values()[0]
}

#[test]
fn every_panel_is_tracts_bit_for_bit() {
    // [one run, two runs, gathered], over all cases: each kind must have been checked.
    let mut kinds = [0usize; 3];
    for c in cases() {
        let (model, id) = tracts_node(&c);
        let ours = op_for(&model, id).unwrap_or_else(|| panic!("{c:?}: not replaced"));
        for p in &ours.gather.panels {
            kinds[match p {
                Panel::Run { .. } => 0,
                Panel::TwoRuns { .. } => 1,
                Panel::Gather => 2,
            }] += 1;
        }
        // The padded input tract's op reads.
        let fact = model.outlet_fact(model.node(id).inputs[0]).unwrap();
        let x = tricky_input(fact.shape.as_concrete().unwrap());
        let (theirs, mine) = (packed(model.node(id).op.as_ref(), &x), packed(&ours, &x));
        let (theirs, mine) = (value(&theirs), value(&mine));
        assert_eq!((mine.k(), mine.mn()), (theirs.k(), theirs.mn()), "{c:?}");
        assert!(mine.format() == theirs.format(), "{c:?}");
        assert_eq!(
            mine.scratch_panel_buffer_layout(),
            theirs.scratch_panel_buffer_layout()
        );
        assert_eq!(panels(mine), panels(theirs), "{c:?}");
        // Point by point, as tract's own reference path reads a packed input.
        let mut a = vec![0f32; mine.k()];
        let panel0 = panels(theirs).remove(0);
        let (floats, _) = panel0.as_chunks::<4>();
        let r = theirs.format().r();
        mine.extract_at_mn_f32(0, &mut a).unwrap();
        for (kk, v) in a.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                u32::from_ne_bytes(floats[kk * r]),
                "{c:?} row {kk}"
            );
        }
    }
    assert!(kinds.iter().all(|&n| n > 0), "panel kinds {kinds:?}");
}

#[test]
fn planned_models_give_tracts_outputs_bit_for_bit() {
    for c in cases() {
        let x = input_of(&c);
        let tracts = Planner::tract().optimize(conv_model(&c)).unwrap();
        let ours = runs_only().optimize(conv_model(&c)).unwrap();
        assert_eq!(tracts.im2col_runs, 0);
        assert_eq!(ours.im2col_runs, 1, "{c:?}");
        let names = |m: &TypedModel| {
            m.nodes()
                .iter()
                .filter(|n| n.op.name() == TRACT_OP_NAME)
                .count()
        };
        assert_eq!(names(&ours.model), 0, "{c:?}");
        assert_eq!(crate::tests::count::<Im2colRuns>(&ours.model), 1, "{c:?}");
        let (theirs, mine) = (run(tracts.model, &x), run(ours.model, &x));
        assert_eq!(bits(&theirs), bits(&mine), "{c:?}");
    }
}

#[test]
fn on_two_intra_op_threads_the_output_is_the_same() {
    // Enough output points (2 × 64 × 64 × 32) for tract's executor to split the product.
    let c = case([1, 16, 64, 64], 32, 3, 1);
    let x = input_of(&c);
    let tracts = Planner::tract().optimize(conv_model(&c)).unwrap().model;
    let ours = runs_only().optimize(conv_model(&c)).unwrap().model;
    crate::tests::assert_same_bits_on_two_threads(tracts, ours, &x);
}

#[test]
fn what_this_op_does_not_cover_stays_tracts() {
    // A grouped convolution: tract's lazy im2col with one value per group.
    let grouped = Case {
        group: 2,
        ..case([1, 8, 20, 20], 8, 3, 1)
    };
    let (model, id) = tracts_node(&grouped);
    assert!(op_for(&model, id).is_none());
    let planned = runs_only().optimize(conv_model(&grouped)).unwrap();
    assert_eq!(planned.im2col_runs, 0);
    let x = input_of(&grouped);
    let tracts = Planner::tract()
        .optimize(conv_model(&grouped))
        .unwrap()
        .model;
    assert_eq!(bits(&run(planned.model, &x)), bits(&run(tracts, &x)));

    // An input too large to probe exactly, another type, a symbolic shape, another op.
    let c = cases()[0];
    let (model, id) = tracts_node(&c);
    let node = model.node(id);
    let out = &node.outputs[0].fact;
    let op = node.op.as_ref();
    assert!(Im2colRuns::for_node(op, &f32::fact([1, 8, 4097, 4096]), out).is_none());
    assert!(Im2colRuns::for_node(op, &f32::fact([1, 8, 20 + 2, 20 + 2]), out).is_some());
    assert!(Im2colRuns::for_node(op, &f16::fact([1, 8, 22, 22]), out).is_none());
    let n = model.symbols.sym("n");
    let symbolic = f32::fact(&[n.to_dim(), 8.to_dim(), 22.to_dim(), 22.to_dim()]);
    assert!(Im2colRuns::for_node(op, &symbolic, out).is_none());
    let other = model
        .nodes()
        .iter()
        .find(|n| n.op.name() != TRACT_OP_NAME && !n.inputs.is_empty())
        .unwrap();
    assert!(Im2colRuns::for_node(other.op.as_ref(), &f32::fact([1, 8, 22, 22]), out).is_none());
}

#[test]
fn a_run_on_another_input_is_an_error_not_a_panic() {
    let c = cases()[0];
    let (model, id) = tracts_node(&c);
    let op = op_for(&model, id).unwrap();
    let ctx = EvalContext::out_of_plan();
    let fits = Tensor::zero::<f32>(&[1, 8, 22, 22]).unwrap();
    assert!(op.eval(&ctx, tvec!(fits.clone().into())).is_ok());
    let larger = Tensor::zero::<f32>(&[1, 8, 23, 22]).unwrap();
    assert!(op.eval(&ctx, tvec!(larger.into())).is_err());
    let ints = Tensor::zero::<i32>(&[1, 8, 22, 22]).unwrap();
    assert!(op.eval(&ctx, tvec!(ints.into())).is_err());
    assert!(op.eval(&ctx, tvec!()).is_err());
    assert!(
        op.eval(&ctx, tvec!(fits.clone().into(), fits.clone().into()))
            .is_err()
    );

    // A panel past the last, no buffer, a misaligned one: errors.
    let out = packed(&op, &fits);
    let v = value(&out);
    let layout = v.scratch_panel_buffer_layout().unwrap();
    let mut buffer =
        Blob::from_bytes_alignment(&vec![0u8; layout.size() + 4], layout.align()).unwrap();
    let at = buffer.as_bytes_mut().as_mut_ptr();
    assert!(v.panel_bytes(v.panels_count(), Some(at)).is_err());
    assert!(v.panel_bytes(0, None).is_err());
    assert!(v.panel_bytes(0, Some(at.wrapping_add(1))).is_err());
    let mut row = vec![0f32; v.k()];
    assert!(v.extract_at_mn_f32(v.mn(), &mut row).is_err());
    assert!(v.extract_at_mn_f32(0, &mut row[1..]).is_err());
    assert!(v.extract_at_mn_f16(0, &mut [f16::ZERO; 1]).is_err());

    // The output facts hold for the planned input only.
    assert!(op.output_facts(&[&f32::fact([1, 8, 22, 22])]).is_ok());
    assert!(op.output_facts(&[&f32::fact([1, 8, 22, 23])]).is_err());
    assert!(op.output_facts(&[]).is_err());
}

#[test]
fn the_gather_refuses_an_input_or_buffer_of_another_size() {
    let c = cases()[0];
    let (model, id) = tracts_node(&c);
    let op = op_for(&model, id).unwrap();
    let g = &op.gather;
    let input = vec![0f32; g.len];
    let mut dst = vec![MaybeUninit::new(0f32); g.k * g.r];
    assert!(g.write_panel(&input, 0, &mut dst).is_ok());
    assert!(g.write_panel(&input[1..], 0, &mut dst).is_err());
    assert!(g.write_panel(&input, 0, &mut dst[1..]).is_err());
    assert!(g.write_panel(&input, g.panels(), &mut dst).is_err());
}

#[test]
fn panels_are_planned_from_their_points() {
    let run: Vec<usize> = (40..52).collect();
    assert_eq!(panel_plan(&run, 100, 1000), Panel::Run { base: 40 });
    // A row end after 5 points: the second run (at 100) is read from 100 - 5.
    let two: Vec<usize> = (40..45).chain(100..107).collect();
    assert_eq!(
        panel_plan(&two, 100, 1000),
        Panel::TwoRuns {
            first: 40,
            second: 95,
            split: 5
        }
    );
    // Either merged read past the input's end, or a second run that starts too early to be
    // moved back: gathered.
    assert_eq!(panel_plan(&two, 100, 95 + 100 + 11), Panel::Gather);
    assert_eq!(
        panel_plan(&two, 100, 95 + 100 + 12),
        Panel::TwoRuns {
            first: 40,
            second: 95,
            split: 5
        }
    );
    let early: Vec<usize> = (40..45).chain(2..9).collect();
    assert_eq!(panel_plan(&early, 0, 1000), Panel::Gather);
    // A repeated point is two runs of one (read twice); three runs and a stride: gathered.
    assert_eq!(
        panel_plan(&[7, 7], 0, 1000),
        Panel::TwoRuns {
            first: 7,
            second: 6,
            split: 1
        }
    );
    let three: Vec<usize> = (0..4).chain(10..14).chain(20..24).collect();
    assert_eq!(panel_plan(&three, 0, 1000), Panel::Gather);
    let strided: Vec<usize> = (0..12).map(|i| 2 * i).collect();
    assert_eq!(panel_plan(&strided, 0, 1000), Panel::Gather);
    assert_eq!(panel_plan(&[], 0, 1000), Panel::Gather);
}

#[test]
fn a_probe_value_names_an_index_or_nothing() {
    assert_eq!(probe_index(0.0, 10), Some(0));
    assert_eq!(probe_index(9.0, 10), Some(9));
    for v in [10.0, -1.0, 2.5, f32::NAN, f32::INFINITY, -0.5] {
        assert_eq!(probe_index(v, 10), None, "{v}");
    }
    let exact = MAX_PROBED_INPUT;
    assert_eq!(probe_index((exact - 1) as f32, exact), Some(exact - 1));
}

#[test]
fn nothing_of_the_input_is_in_its_debug_form() {
    let c = cases()[0];
    let (model, id) = tracts_node(&c);
    let op = op_for(&model, id).unwrap();
    let mut x = Tensor::zero::<f32>(&[1, 8, 22, 22]).unwrap();
    x.try_as_plain_ram_mut()
        .unwrap()
        .as_slice_mut::<f32>()
        .unwrap()
        .fill(1234.5);
    let out = packed(&op, &x);
    let shown = format!("{:?} {} {:?}", value(&out), value(&out), op);
    assert!(!shown.contains("1234"), "{shown}");
}
