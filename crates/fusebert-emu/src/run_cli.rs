//! Research CLI: run one kernel of a PTX file on the emulator with tensors from a safetensors
//! file, write the outputs to another, and print the counters.
//!
//! `ptxemu run FILE.ptx (also `fusebert emu run`) --kernel NAME --grid X[,Y,Z] --block X[,Y,Z] [--shared BYTES]
//!  --inputs IN.safetensors --output OUT.safetensors --arg buf:NAME --arg out:NAME:DTYPE:LEN
//!  --arg u32:V --arg i32:V --arg f32:V --arg u64:V --arg tmap:BUF:DTYPE:DIMS:STRIDES:BOX:SWIZZLE
//!  --arg bytes:BUF [--counters] [--arch sm_80|sm_86|sm_89|sm_90] [--math exact|envelope]
//!  [--async lazy|eager|random:SEED] [--resident-blocks N]`
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};

use crate::arch::{Arch, AsyncMode, MathMode};
use crate::engine::{Emulator, EmulatorOptions, LaunchDims, Param, ParamBytes};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct EmuRunArgs {
    /// PTX file to load.
    pub file: PathBuf,
    /// Entry name.
    #[arg(long)]
    pub kernel: String,
    /// Grid size `X[,Y,Z]`.
    #[arg(long)]
    pub grid: String,
    /// Block size `X[,Y,Z]`.
    #[arg(long)]
    pub block: String,
    /// Dynamic shared memory bytes.
    #[arg(long, default_value_t = 0)]
    pub shared: u32,
    /// Input tensors (for `buf:NAME` arguments).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Where to write the `out:` buffers.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Kernel arguments in order: buf:NAME, out:NAME:DTYPE:LEN, u32:V, i32:V, f32:V, u64:V, i64:V, f64:V,
    /// tmap:BUF:DTYPE:DIMS:STRIDES:BOX:SWIZZLE (a tiled tensor map over input buffer BUF),
    /// bytes:BUF (a by-value parameter's raw bytes from input buffer BUF).
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// Print the launch counters as JSON.
    #[arg(long)]
    pub counters: bool,
    /// Turn the sanitizers off.
    #[arg(long)]
    pub no_sanitize: bool,
    /// Target architecture (sm_80, sm_86, sm_89, sm_90): launch limits and tensor-core numerics.
    #[arg(long, default_value = "sm_80")]
    pub arch: String,
    /// Approximate math: `exact` (correctly rounded) or `envelope` (anywhere in the ISA's error
    /// bound, hashed per input). Default: `$FUSEBERT_EMU_MATH`, else exact.
    #[arg(long)]
    pub math: Option<String>,
    /// When TMA copies land: `lazy` (as late as possible), `eager` (at issue) or `random:SEED`.
    /// Default: `$FUSEBERT_EMU_ASYNC`, else lazy.
    #[arg(long = "async")]
    pub async_mode: Option<String>,
    /// Blocks resident at once when the kernel's blocks wait on each other (it polls global
    /// memory: a co-scheduled launch). Default: the arch's SMs x blocks per SM.
    #[arg(long)]
    pub resident_blocks: Option<u32>,
}

/// `X` or `AxBxC` (innermost first) as numbers; `-` for an empty list.
fn xlist<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    if s == "-" {
        return Ok(Vec::new());
    }
    s.split('x').map(|v| num(v, what)).collect()
}

/// `tmap:BUF:DTYPE:DIMS:STRIDES:BOX:SWIZZLE`: encodes a tiled tensor map over input buffer
/// BUF (already uploaded at `addr`, `len` bytes) as `cuTensorMapEncodeTiled` would.
fn tensor_map(spec: &[&str], addr: u64, len: usize) -> Result<[u8; crate::tma::TMAP_BYTES]> {
    let bad = |m: String| Error::Input(format!("--arg tmap:{}: {m}", spec.join(":")));
    let [_, dt, dims, strides, boxd, swz] = spec else {
        return Err(bad("expected tmap:BUF:DTYPE:DIMS:STRIDES:BOX:SWIZZLE".into()));
    };
    let code = crate::tma::dtype_code(dt).ok_or_else(|| bad(format!("dtype `{dt}` (f16, s8, u8, f32)")))?;
    let swz = crate::tma::Swizzle::parse(swz).ok_or_else(|| bad(format!("swizzle `{swz}` (none, 32b, 64b, 128b)")))?;
    let dims: Vec<u64> = xlist(dims, "dimension")?;
    let strides: Vec<u64> = xlist(strides, "stride")?;
    let boxd: Vec<u32> = xlist(boxd, "box size")?;
    let es = vec![1u32; dims.len()];
    let map =
        crate::tma::encode_tiled(code, dims.len() as u32, addr, &dims, &strides, &boxd, &es, 0, swz as u32, false)
            .map_err(|e| bad(format!("cuTensorMapEncodeTiled would refuse it: {e}")))?;
    let m = crate::tma::decode(&map).map_err(bad)?;
    let r = dims.len();
    let extent = if r == 1 { dims[0] * m.esize() as u64 } else { strides[r - 2] * dims[r - 1] };
    if extent > len as u64 {
        return Err(bad(format!("the tensor spans {extent} bytes, the buffer has {len}")));
    }
    Ok(map)
}

fn dims(s: &str) -> Result<(u32, u32, u32)> {
    let v: std::result::Result<Vec<u32>, _> = s.split(',').map(|x| x.trim().parse::<u32>()).collect();
    let v = v.map_err(|_| Error::Input(format!("bad dimensions `{s}` (expected X[,Y,Z])")))?;
    match v.as_slice() {
        [x] => Ok((*x, 1, 1)),
        [x, y] => Ok((*x, *y, 1)),
        [x, y, z] => Ok((*x, *y, *z)),
        _ => Err(Error::Input(format!("bad dimensions `{s}` (expected X[,Y,Z])"))),
    }
}

/// A safetensors dtype name (`F16`, `BF16`, `F32`, `I8`, ...), case-insensitive.
fn dtype_of(s: &str) -> Result<Dtype> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => Dtype::F32,
        "f16" => Dtype::F16,
        "bf16" => Dtype::BF16,
        "f64" => Dtype::F64,
        "u8" => Dtype::U8,
        "i8" => Dtype::I8,
        "u16" => Dtype::U16,
        "i16" => Dtype::I16,
        "u32" => Dtype::U32,
        "i32" => Dtype::I32,
        "u64" => Dtype::U64,
        "i64" => Dtype::I64,
        _ => return Err(Error::Input(format!("unknown dtype `{s}`"))),
    })
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.parse::<T>().map_err(|_| Error::Input(format!("`{s}` is not a valid {what}")))
}

/// Runs the command.
pub fn run(args: &EmuRunArgs) -> Result<()> {
    let ptx = std::fs::read_to_string(&args.file).map_err(|e| Error::io(&args.file, e))?;
    let arch = args.arch.parse::<Arch>().map_err(Error::Input)?;
    let math = match &args.math {
        Some(m) => m.parse::<MathMode>().map_err(Error::Input)?,
        None => MathMode::from_env().map_err(Error::Input)?,
    };
    let async_mode = match &args.async_mode {
        Some(m) => m.parse::<AsyncMode>().map_err(Error::Input)?,
        None => AsyncMode::from_env().map_err(Error::Input)?,
    };
    if args.resident_blocks == Some(0) {
        return Err(Error::Input("--resident-blocks must be at least 1".into()));
    }
    let opts = EmulatorOptions {
        sanitize: !args.no_sanitize,
        arch,
        math,
        async_mode,
        resident_blocks: args.resident_blocks,
        ..Default::default()
    };
    let emu = Emulator::new(opts)?;
    let name = args.file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "module".into());
    emu.load_module(&name, &ptx)?;
    let input_bytes = match &args.inputs {
        Some(p) => Some(std::fs::read(p).map_err(|e| Error::io(p, e))?),
        None => None,
    };
    let inputs = match (&input_bytes, &args.inputs) {
        (Some(b), Some(p)) => {
            Some(SafeTensors::deserialize(b).map_err(|e| Error::Safetensors { path: p.clone(), msg: e.to_string() })?)
        }
        _ => None,
    };
    let mut kargs = Vec::new();
    let mut outs: Vec<(String, Dtype, usize, u64, usize)> = Vec::new();
    let mut allocs = Vec::new();
    let input = |a: &str, n: &str| -> Result<Vec<u8>> {
        let (st, path) = match (&inputs, &args.inputs) {
            (Some(s), Some(p)) => (s, p),
            _ => return Err(Error::Input(format!("--arg {a} needs --inputs"))),
        };
        let t = st.tensor(n).map_err(|_| Error::TensorMissing { path: path.clone(), name: n.to_string() })?;
        Ok(t.data().to_vec())
    };
    for a in &args.args {
        if let Some(rest) = a.strip_prefix("tmap:") {
            let spec: Vec<&str> = rest.split(':').collect();
            let data = input(a, spec[0])?;
            let addr = emu.alloc(data.len())?;
            emu.write(addr, &data)?;
            allocs.push(addr);
            let map = tensor_map(&spec, addr, data.len())?;
            kargs.push(Param::Bytes(ParamBytes::new(&map).expect("128 bytes fit")));
            continue;
        }
        let parts: Vec<&str> = a.splitn(4, ':').collect();
        match parts.as_slice() {
            ["buf", n] => {
                let data = input(a, n)?;
                let addr = emu.alloc(data.len())?;
                emu.write(addr, &data)?;
                allocs.push(addr);
                kargs.push(Param::Ptr(addr));
            }
            ["bytes", n] => {
                let data = input(a, n)?;
                let b = ParamBytes::new(&data).ok_or_else(|| {
                    Error::Input(format!("--arg {a}: {} bytes, at most {} by value", data.len(), ParamBytes::MAX))
                })?;
                kargs.push(Param::Bytes(b));
            }
            ["out", n, dt, len] => {
                let dt = dtype_of(dt)?;
                let len: usize = num(len, "length")?;
                let bytes = len * dt.bitsize() / 8;
                let addr = emu.alloc(bytes)?;
                emu.memset(addr, 0xFF, bytes)?;
                allocs.push(addr);
                outs.push((n.to_string(), dt, len, addr, bytes));
                kargs.push(Param::Ptr(addr));
            }
            ["u32", v] => kargs.push(Param::U32(num(v, "u32")?)),
            ["i32", v] => kargs.push(Param::I32(num(v, "i32")?)),
            ["u64", v] => kargs.push(Param::U64(num(v, "u64")?)),
            ["i64", v] => kargs.push(Param::I64(num(v, "i64")?)),
            ["f32", v] => kargs.push(Param::F32(num(v, "f32")?)),
            ["f64", v] => kargs.push(Param::F64(num(v, "f64")?)),
            _ => {
                return Err(Error::Input(format!(
                    "bad --arg `{a}` (buf:NAME, out:NAME:DTYPE:LEN, u32:V, i32:V, f32:V, u64:V, i64:V, f64:V, \
                     tmap:BUF:DTYPE:DIMS:STRIDES:BOX:SWIZZLE, bytes:BUF)"
                )))
            }
        }
    }
    let cfg = LaunchDims { grid: dims(&args.grid)?, block: dims(&args.block)?, shared_mem_bytes: args.shared };
    emu.launch(&name, &args.kernel, &cfg, &kargs)?;
    if let Some(path) = &args.output {
        let mut datas = Vec::new();
        for (n, dt, len, addr, bytes) in &outs {
            let mut buf = vec![0u8; *bytes];
            emu.read(*addr, &mut buf)?;
            datas.push((n.clone(), *dt, *len, buf));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = datas
            .iter()
            .map(|(n, dt, len, buf)| {
                safetensors::tensor::TensorView::new(*dt, vec![*len], buf)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Safetensors { path: path.clone(), msg: e.to_string() })
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| Error::Safetensors { path: path.clone(), msg: e.to_string() })?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))?;
    } else if !outs.is_empty() {
        return Err(Error::Input("out: arguments given without --output".into()));
    }
    if args.counters {
        if let Some(c) = emu.last_counters() {
            println!("{}", serde_json::to_string_pretty(&c.to_json()).unwrap_or_default());
        }
    }
    for a in allocs {
        emu.free(a);
    }
    Ok(())
}
