use capped_test::capped;

#[capped(group = "GPU")]
fn upper_case() {}

#[capped(group = "a/b")]
fn with_a_slash() {}

#[capped(groups = ["ok", "../etc", ""])]
fn in_a_list() {}

fn main() {}
