//! `.npy` files written by NumPy itself (see `tests/data/README.md` for how each was made).

use std::path::PathBuf;

use sealed_client::npy::{self, NpyError};
use sealed_wire::{DType, Tensor};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/npy")
        .join(name)
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

#[test]
fn reads_the_bundled_digits_sample_written_by_numpy() {
    let t = npy::read_file(&data("digit_0_1.npy")).unwrap();
    assert_eq!((t.dtype(), t.shape()), (DType::F32, &[1u64, 64][..]));
    let values = t.to_f32().unwrap();
    // First pixels as numpy prints them: [0. 0. 0.125 0.875 0.8125]; all pixels are in [0, 1].
    assert_eq!(values[..5], [0.0, 0.0, 0.125, 0.875, 0.8125]);
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn writes_the_same_bytes_as_numpy_save() {
    for name in [
        "digit_0_1.npy",
        "f16.npy",
        "f64.npy",
        "i8.npy",
        "i64.npy",
        "u16_scalar.npy",
        "u32.npy",
        "bool.npy",
    ] {
        let original = bytes(name);
        let t = npy::read(&original).unwrap();
        assert_eq!(npy::write(&t), original, "{name}");
    }
}

#[test]
fn reads_numpy_values_of_each_dtype() {
    let t = npy::read(&bytes("f16.npy")).unwrap();
    assert_eq!((t.dtype(), t.shape()), (DType::F16, &[2u64, 2][..]));
    // IEEE half: 1.5 = 0x3e00, -2.0 = 0xc000, 0.0, 65504 = 0x7bff (largest finite).
    assert_eq!(t.data(), [0x00, 0x3e, 0x00, 0xc0, 0, 0, 0xff, 0x7b]);

    let t = npy::read(&bytes("f64.npy")).unwrap();
    assert_eq!(t.to_f64().unwrap(), vec![0.1, -1e300, 3.0]);

    let t = npy::read(&bytes("i8.npy")).unwrap();
    assert_eq!((t.dtype(), t.data()), (DType::I8, &[0x80u8, 0, 0x7f][..]));

    let t = npy::read(&bytes("i64.npy")).unwrap();
    assert_eq!(t.shape(), [2, 3]);
    assert_eq!(t.to_i64().unwrap(), vec![-3, -2, -1, 0, 1, 2]);

    let t = npy::read(&bytes("u16_scalar.npy")).unwrap();
    assert_eq!(
        (t.dtype(), t.shape(), t.data()),
        (DType::U16, &[][..], &[1u8, 2][..])
    );

    let t = npy::read(&bytes("u32.npy")).unwrap();
    assert_eq!(t.data(), [0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0]);

    let t = npy::read(&bytes("bool.npy")).unwrap();
    assert_eq!((t.dtype(), t.data()), (DType::Bool, &[1u8, 0, 1][..]));
}

#[test]
fn reads_format_versions_two_and_three() {
    let expected = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
    for name in ["f32_v2.npy", "f32_v3.npy"] {
        let original = bytes(name);
        assert_eq!(original[6], if name.contains("v2") { 2 } else { 3 });
        assert_eq!(npy::read(&original).unwrap(), expected, "{name}");
    }
}

#[test]
fn refuses_numpy_files_we_do_not_support() {
    assert!(matches!(
        npy::read(&bytes("fortran_order.npy")),
        Err(NpyError::FortranOrder)
    ));
    assert!(matches!(
        npy::read(&bytes("big_endian.npy")),
        Err(NpyError::ByteOrder(d)) if d == ">i4"
    ));
    assert!(matches!(
        npy::read(&bytes("object.npy")),
        Err(NpyError::UnsupportedDType(d)) if d == "|O"
    ));
}
