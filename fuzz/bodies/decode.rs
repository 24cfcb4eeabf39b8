// Shared by the fuzz bodies (each includes it with `include!("decode.rs")`).

/// Values of `T` until the input runs out: every byte counts (unlike
/// `Vec::arbitrary_take_rest`, which spends a "keep going" bit per element).
fn decode_ops<'a, T: arbitrary::Arbitrary<'a>>(u: &mut arbitrary::Unstructured<'a>) -> Vec<T> {
    let mut ops = Vec::new();
    while !u.is_empty() {
        match T::arbitrary(u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}
