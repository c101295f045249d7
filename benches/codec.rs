//! Codec throughput: decode and encode of one PUBLISH, MQTT 3.1.1 and 5.0, with 16 B, 1 KiB and
//! 64 KiB payloads. The numbers back the codec's hot-path choices (zero-copy topic and payload,
//! one exact reservation per encode): run `cargo bench --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use midge_codec::{decode, encode, encoded_len, Packet, Properties, ProtocolVersion, Publish, QoS};
use std::hint::black_box;

fn publish(version: ProtocolVersion, payload_len: usize) -> Packet {
    let properties = if version.is_v5() {
        // What a typical 5.0 publisher sends: a topic alias and one user property.
        Properties {
            topic_alias: Some(1),
            user_properties: vec![("trace".into(), "a1b2c3".into())],
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/building-7/floor-3/temperature".into(),
        packet_id: 42,
        properties,
        payload: Bytes::from(vec![0x5A; payload_len]),
    })
}

const CASES: [(ProtocolVersion, &str); 2] =
    [(ProtocolVersion::V311, "v311"), (ProtocolVersion::V5, "v5")];
const SIZES: [usize; 3] = [16, 1024, 65536];

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for (version, name) in CASES {
        for size in SIZES {
            let packet = publish(version, size);
            let mut wire = BytesMut::new();
            encode(&packet, version, &mut wire);
            let wire = wire.freeze();
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &wire, |b, wire| {
                // A fresh read buffer per iteration, as a socket read would fill it; the copy
                // is part of both arms of any comparison and small next to a syscall.
                b.iter_batched_ref(
                    || BytesMut::from(&wire[..]),
                    |buf| black_box(decode(buf, Some(version), 0).unwrap()),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_publish");
    for (version, name) in CASES {
        for size in SIZES {
            let packet = publish(version, size);
            let len = encoded_len(&packet, version);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &packet, |b, packet| {
                // A reused output buffer, as a connection's write buffer is.
                let mut out = BytesMut::with_capacity(len);
                b.iter(|| {
                    out.clear();
                    black_box(encode(black_box(packet), version, &mut out))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
