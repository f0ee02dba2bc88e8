//! The newline codec on a byte stream cut into reads at arbitrary points.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// The line limit, kept small so that oversized lines are common.
    max: u8,
    /// Where to cut the stream into reads (taken modulo its length).
    cuts: Vec<u16>,
    stream: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max % 64);
    let mut points: Vec<usize> = input
        .cuts
        .iter()
        .map(|c| usize::from(*c) % (input.stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        chunks.push(&input.stream[start..p]);
        start = p;
    }
    chunks.push(&input.stream[start..]);
    authbridge::fuzzing::codec(&chunks, max);
});
