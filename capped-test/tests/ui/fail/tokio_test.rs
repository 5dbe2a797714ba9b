use capped_test::capped;

#[capped(group = "net")]
#[tokio::test]
async fn also_tokio() {}

fn main() {}
