//! Control-flow graph of a kernel and the reconvergence point of every branch: the immediate
//! post-dominator of the branch's basic block (Cooper-Harvey-Kennedy on the reverse CFG).
use super::ir::*;

/// Fills `Inst::rpc` of every branch.
pub fn compute_reconvergence(k: &mut Kernel) {
    let n = k.insts.len();
    if n == 0 {
        return;
    }
    // basic-block leaders
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    for (i, inst) in k.insts.iter().enumerate() {
        match inst.op {
            Op::Bra => {
                if (inst.target as usize) < n {
                    leader[inst.target as usize] = true;
                }
                leader[i + 1] = true;
            }
            Op::Ret | Op::Exit | Op::Trap => leader[i + 1] = true,
            _ => {}
        }
    }
    let mut block_start = Vec::new();
    let mut block_of = vec![0usize; n];
    for i in 0..n {
        if leader[i] {
            block_start.push(i);
        }
        block_of[i] = block_start.len() - 1;
    }
    let nb = block_start.len();
    let exit = nb;
    let block_end = |b: usize| if b + 1 < nb { block_start[b + 1] - 1 } else { n - 1 };
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); nb + 1];
    for (b, out) in succ.iter_mut().enumerate().take(nb) {
        let last = block_end(b);
        let inst = &k.insts[last];
        let next = if last + 1 < n { block_of[last + 1] } else { exit };
        let guarded = inst.guard != NONE;
        match inst.op {
            Op::Bra => {
                out.push(block_of[inst.target as usize]);
                if guarded {
                    out.push(next);
                }
            }
            Op::Ret | Op::Exit | Op::Trap => {
                out.push(exit);
                if guarded {
                    out.push(next);
                }
            }
            _ => out.push(next),
        }
    }
    // reverse graph: edges s -> b for every b -> s
    let mut rsucc: Vec<Vec<usize>> = vec![Vec::new(); nb + 1];
    for (b, ss) in succ.iter().enumerate().take(nb) {
        for &s in ss {
            rsucc[s].push(b);
        }
    }
    // postorder of the reverse graph from exit (iterative DFS)
    let mut order = vec![usize::MAX; nb + 1];
    let mut post = Vec::with_capacity(nb + 1);
    let mut visited = vec![false; nb + 1];
    let mut stack = vec![(exit, 0usize)];
    visited[exit] = true;
    while let Some(&mut (v, ref mut ei)) = stack.last_mut() {
        if *ei < rsucc[v].len() {
            let w = rsucc[v][*ei];
            *ei += 1;
            if !visited[w] {
                visited[w] = true;
                stack.push((w, 0));
            }
        } else {
            order[v] = post.len();
            post.push(v);
            stack.pop();
        }
    }
    let mut ipdom = vec![usize::MAX; nb + 1];
    ipdom[exit] = exit;
    let intersect = |ipdom: &Vec<usize>, mut a: usize, mut b: usize| {
        while a != b {
            while order[a] < order[b] {
                a = ipdom[a];
            }
            while order[b] < order[a] {
                b = ipdom[b];
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &b in post.iter().rev() {
            if b == exit {
                continue;
            }
            // "predecessors" in the reverse graph = successors in the CFG
            let mut new = usize::MAX;
            for &s in &succ[b] {
                if ipdom[s] == usize::MAX {
                    continue;
                }
                new = if new == usize::MAX { s } else { intersect(&ipdom, s, new) };
            }
            if new != usize::MAX && ipdom[b] != new {
                ipdom[b] = new;
                changed = true;
            }
        }
    }
    for (inst, &b) in k.insts.iter_mut().zip(&block_of).take(n) {
        if inst.op == Op::Bra {
            let p = ipdom[b];
            inst.rpc = if p == usize::MAX || p == exit { EXIT_PC } else { block_start[p] as u32 };
        }
    }
}
