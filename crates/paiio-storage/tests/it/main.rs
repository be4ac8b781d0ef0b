//! The integration tests of `paiio-storage`, one binary: the conformance suite against the
//! local warehouse (`local`), checks of the suite itself (`datagen`: the generator catches
//! corruption; `faulty`: every injected fault is caught by its capability), the Tunnel wire
//! codecs against the released PyODPS (`tunnel_wire`), and more.

mod concurrency;
mod crash;
mod datagen;
mod faulty;
mod local;
mod tunnel_codec;
mod tunnel_wire;
mod vacuum;
