use capped_test::capped;

#[capped(group = "gpu", groups = ["net", "gpu"])]
fn gpu_twice() {}

#[capped(group = "gpu", group = "net")]
fn group_twice() {}

#[capped(threads = 2, threads = 3)]
fn threads_twice() {}

#[capped(serial, threads = 2)]
fn serial_and_threads() {}

fn main() {}
