fn main() {
    for m in fusebert::ptx::MODULES {
        println!("{}: {:?}", m.name, m.kernels);
    }
}
