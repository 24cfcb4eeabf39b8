// Runs a fuzz body as an ordinary test: over every file of the checked-in
// seed corpus `fuzz/corpus/<name>/`, then over seeded pseudo-random inputs
// (deterministic: the same inputs on every run and machine).
//
// Included (`include!`) by each crate's `tests/fuzz_bodies.rs`. Under Miri
// it runs a handful of inputs only. `FUZZ_BODY_INPUTS=<n>` overrides how
// many pseudo-random inputs to run.

use std::path::Path;

/// splitmix64: a tiny deterministic generator for the random inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs `body` over the corpus of target `name` and `inputs` (or
/// `FUZZ_BODY_INPUTS`) pseudo-random inputs of up to `max_len` bytes. A failing input is
/// printed (hex) before the panic propagates, ready to be saved as
/// `fuzz/artifacts/<name>/crash-*` and replayed with `cargo fuzz run`.
pub fn run_corpus(name: &str, inputs: usize, max_len: usize, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty seed corpus {}", dir.display());
    let (files, random, max_len) = if cfg!(miri) {
        (&files[..files.len().min(2)], 2, max_len.min(48))
    } else {
        let n = std::env::var("FUZZ_BODY_INPUTS")
            .ok()
            .and_then(|v| v.parse().ok());
        (&files[..], n.unwrap_or(inputs), max_len)
    };
    for file in files {
        let data = std::fs::read(file).unwrap();
        let data = if cfg!(miri) {
            &data[..data.len().min(max_len)]
        } else {
            &data[..]
        };
        guarded(body, data, &file.display().to_string());
    }
    let seed = name
        .bytes()
        .fold(0x5EED_F00D_u64, |h, b| h.rotate_left(8) ^ u64::from(b));
    let mut rng = SplitMix(seed);
    let mut data = Vec::with_capacity(max_len);
    for i in 0..random {
        let len = (rng.next() % (max_len as u64 + 1)) as usize;
        data.clear();
        while data.len() < len {
            data.extend_from_slice(&rng.next().to_le_bytes());
        }
        data.truncate(len);
        guarded(body, &data, &format!("pseudo-random input {i}"));
    }
}

fn guarded(body: fn(&[u8]), data: &[u8], what: &str) {
    if std::panic::catch_unwind(|| body(data)).is_err() {
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        panic!("fuzz body failed on {what} ({} bytes): {hex}", data.len());
    }
}
