//! The build's ptxas gate: which lines of `ptxas -v` output fail the build. build.rs compiles
//! this file too (`#[path]`), so it uses `std` only; the library exposes it for tests and tools.
//!
//! ptxas reports the hazards that cost a Hopper kernel its pipelining as *info* lines, not
//! warnings, so exit status alone misses them (all seen with ptxas 13.0 on the fixtures in
//! `tests/fixtures/`):
//! - C7515: wgmma serialized because a non-wgmma instruction defines an accumulator inside a
//!   pipeline stage (e.g. a write between `commit_group` and `wait_group`);
//! - C7520: wgmma serialized for a warpgroup arrive ptxas inserted in a divergent path (a wgmma
//!   under a branch or a predicate whose accumulators another path shares);
//! - C7511: wgmma serialized for lack of registers;
//! - C7508: `setmaxnreg` ignored (register count at entry unknown: no `.maxntid`);
//! - C7519: `warpgroup.arrive` injected by ptxas (an accumulator written between `wgmma.fence`
//!   and the wgmma: the source's fence is in the wrong place).
//!
//! Spills (`bytes spill stores/loads` nonzero) fail too: every kernel compiled so far spills
//! nothing on any target, and a spill goes to local memory, which no hot loop can afford.

/// A ptxas diagnostic or figure that fails the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxasProblem {
    /// The kernel it belongs to, when ptxas names it (C7508 names none).
    pub kernel: Option<String>,
    /// `"C7515"` etc., `"warning"` for a ptxas warning, `"spill"` for spills.
    pub code: String,
    /// The ptxas line, trimmed.
    pub line: String,
}

impl std::fmt::Display for PtxasProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kernel = self.kernel.as_deref().unwrap_or("(kernel not named by ptxas)");
        write!(f, "kernel {kernel}: {}: {}", self.code, self.line)
    }
}

/// The diagnostic codes that fail the build (see the module comment).
pub const FAILING_CODES: [&str; 5] = ["C7508", "C7511", "C7515", "C7519", "C7520"];

/// Every problem in the output of one `ptxas -v` run (one module, one target).
pub fn ptxas_problems(output: &str) -> Vec<PtxasProblem> {
    let mut out = Vec::new();
    // the entry whose figures follow ("Function properties for X" precedes its spill line)
    let mut current: Option<String> = None;
    for line in output.lines().map(str::trim) {
        if let Some(k) =
            quoted_after(line, "Compiling entry function '").or_else(|| plain_after(line, "Function properties for "))
        {
            current = Some(k);
            continue;
        }
        let named = quoted_after(line, "function '");
        if let Some(code) = FAILING_CODES.iter().find(|c| line.contains(&format!("({c})"))) {
            out.push(PtxasProblem { kernel: named, code: code.to_string(), line: line.to_string() });
        } else if line.contains("warning") {
            out.push(PtxasProblem { kernel: named, code: "warning".into(), line: line.to_string() });
        } else if line.contains("bytes spill stores")
            && (number_before(line, "bytes spill stores") > 0 || number_before(line, "bytes spill loads") > 0)
        {
            out.push(PtxasProblem { kernel: current.clone(), code: "spill".into(), line: line.to_string() });
        }
    }
    out
}

/// The problems of a whole report in `ptx/ptxas.txt`'s layout (`"<module> <arch>: <line>"`),
/// each with its module and arch.
pub fn report_problems(report: &str) -> Vec<(String, String, PtxasProblem)> {
    // group the lines of each (module, arch) in order, then gate each group as one ptxas run
    let mut groups: Vec<((String, String), String)> = Vec::new();
    for line in report.lines() {
        let Some((head, text)) = line.split_once(": ") else { continue };
        let Some((module, arch)) = head.split_once(' ') else { continue };
        let key = (module.to_string(), arch.to_string());
        match groups.last_mut() {
            Some((k, g)) if *k == key => {
                g.push_str(text);
                g.push('\n');
            }
            _ => groups.push((key, format!("{text}\n"))),
        }
    }
    groups
        .into_iter()
        .flat_map(|((m, a), text)| ptxas_problems(&text).into_iter().map(move |p| (m.clone(), a.clone(), p)))
        .collect()
}

fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    Some(rest.split('\'').next()?.to_string())
}

fn plain_after(line: &str, marker: &str) -> Option<String> {
    let rest = line.strip_prefix("ptxas info    : ")?.strip_prefix(marker)?;
    Some(rest.trim().to_string())
}

/// The integer just before `label` in `text` (0 if absent).
fn number_before(text: &str, label: &str) -> u64 {
    text.split(label)
        .next()
        .filter(|s| s.len() < text.len())
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).rfind(|w| !w.is_empty()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn codes(p: &[PtxasProblem]) -> Vec<(Option<&str>, &str)> {
        p.iter().map(|p| (p.kernel.as_deref(), p.code.as_str())).collect()
    }

    #[test]
    fn captured_hazards_fail_and_the_clean_twin_passes() {
        assert_eq!(ptxas_problems(&fixture("ptxas_wgmma_clean.txt")), vec![]);
        assert_eq!(codes(&ptxas_problems(&fixture("ptxas_wgmma_c7515.txt"))), vec![(Some("wgmma_c7515"), "C7515")]);
        assert_eq!(codes(&ptxas_problems(&fixture("ptxas_wgmma_c7519.txt"))), vec![(Some("wgmma_c7519"), "C7519")]);
        assert_eq!(codes(&ptxas_problems(&fixture("ptxas_wgmma_c7520.txt"))), vec![(Some("wgmma_c7520"), "C7520")]);
        assert_eq!(codes(&ptxas_problems(&fixture("ptxas_setmaxnreg_c7508.txt"))), vec![(None, "C7508")]);
    }

    #[test]
    fn spills_and_warnings_fail_with_their_kernel() {
        // gemm_f16's sm_90 PTX squeezed with --maxrregcount=16: one warning, one kernel spills
        let p = ptxas_problems(&fixture("ptxas_spill.txt"));
        assert_eq!(codes(&p), vec![(None, "warning"), (Some("gemm_f16_simple"), "spill")]);
        assert!(p[1].line.contains("40 bytes spill stores"), "{}", p[1]);
        assert!(p[1].to_string().contains("kernel gemm_f16_simple: spill"), "{}", p[1]);
    }

    #[test]
    fn c7511_is_recognised_and_zero_spills_pass() {
        let out = "ptxas info    : (C7511) Potential Performance Loss: wgmma.mma_async instructions are \
                   serialized due to insufficient register resources for the wgmma pipeline in the function 'g'\n\
                   ptxas info    : Function properties for g\n    \
                   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                   ptxas info    : Function properties for h\n    \
                   0 bytes stack frame, 0 bytes spill stores, 8 bytes spill loads\n";
        assert_eq!(codes(&ptxas_problems(out)), vec![(Some("g"), "C7511"), (Some("h"), "spill")]);
    }

    #[test]
    fn report_lines_are_gated_per_module_and_arch() {
        let report = "a sm_80: ptxas info    : Function properties for k\n\
                      a sm_80:     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
                      b sm_90a: ptxas info    : (C7515) Potential Performance Loss: ... in the function 'w'\n\
                      b sm_90a: ptxas info    : Function properties for w\n\
                      b sm_90a:     0 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n";
        let p = report_problems(report);
        let got: Vec<(&str, &str, &str)> =
            p.iter().map(|(m, a, p)| (m.as_str(), a.as_str(), p.code.as_str())).collect();
        assert_eq!(got, vec![("b", "sm_90a", "C7515"), ("b", "sm_90a", "spill")]);
    }
}
