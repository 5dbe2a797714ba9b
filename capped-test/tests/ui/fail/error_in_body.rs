use capped_test::capped;

#[capped(group = "gpu")]
fn body_has_a_type_error() {
    let count: u32 = "not a number";
    let _ = count;
}

#[capped]
async fn async_body_has_a_type_error() {
    let count: u32 = "not a number";
    let _ = count;
}

fn main() {}
