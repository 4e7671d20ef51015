//! Prints the perfplus version, as the C ABI reports it.

fn main() {
    println!("perfplus {}", perfplus::VERSION);
}
