// study.cpp — see study.hpp.
//
// Design note.  The task list is a pure function of the configuration (search
// seeds R, random architectures K, retrain seeds S), ordered seed-major (every
// architecture's seed 1, then seed 2, …) so that an interrupted study has
// balanced groups; every rank computes it, rank 0 writes the architectures and
// DIR/plan.json.  A task is done when its eval_test/eval.json exists; the report
// is built from those files only, holds no wall times or absolute paths, and so is
// the same after any sequence of interruptions and re-runs.  The one exception is
// on purpose: DIR/looks.jsonl records every report written over a different set of
// finished retrains (a partial --study.report, a study extended to more seeds), and
// the report lists those looks, because p-values read at several looks are not
// corrected for them.
#include "dsonas/run/study.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/core/json.hpp"
#include "dsonas/core/stats.hpp"
#include "dsonas/dist/communicator.hpp"
#include "dsonas/io/atomic_file.hpp"
#include "dsonas/model/architecture.hpp"
#include "dsonas/model/random_arch.hpp"
#include "dsonas/run/config.hpp"
#include "dsonas/run/derive.hpp"
#include "dsonas/run/retrain.hpp"
#include "dsonas/run/run_common.hpp"
#include "dsonas/run/tools.hpp"
#include "dsonas/run/train.hpp"
#include "stages.hpp"

namespace dsonas {
namespace {

using namespace stages;

struct Task {
  std::string name, group, arch;  // arch: the architecture's name (DIR/archs/<arch>.json)
  int64_t seed = 0;
};

std::string search_dir(const std::string& D, int r) { return str(D, "/r", r); }
std::string found_name(int r) { return r == 1 ? "found" : str("found_r", r); }
std::string random_name(int k) {
  char b[32];
  std::snprintf(b, sizeof b, "random_%03d", k);
  return b;
}

std::vector<Task> plan_tasks(const RunConfig& cfg) {
  std::vector<std::string> archs;
  for (int r = 1; r <= cfg.study_search_seeds; ++r) archs.push_back(found_name(r));
  archs.push_back("baseline");
  for (int k = 1; k <= cfg.study_random; ++k) archs.push_back(random_name(k));
  std::vector<Task> t;
  for (int s = 1; s <= cfg.study_seeds; ++s)
    for (const std::string& a : archs) {
      Task x;
      x.arch = a;
      x.group = a.rfind("found", 0) == 0 ? "found" : a.rfind("random", 0) == 0 ? "random" : "baseline";
      x.seed = cfg.seed + s - 1;
      x.name = str(a, "_s", x.seed);
      t.push_back(x);
    }
  return t;
}

std::string task_dir(const std::string& D, const Task& t) { return D + "/retrain/" + t.name; }
std::string eval_file(const std::string& D, const Task& t) { return task_dir(D, t) + "/eval_test/eval.json"; }

void write_text(const std::string& p, const std::string& text) { write_file_atomically(p, text.data(), text.size()); }

/// Rank 0: the architectures (found at the retrain width, the baseline and the
/// random ones at its MACs) and plan.json, unless plan.json exists.
void write_architectures(const RunConfig& cfg, const std::vector<Task>& tasks) {
  const std::string D = cfg.out, A = D + "/archs";
  if (path_exists(D + "/plan.json")) return;
  ::mkdir(A.c_str(), 0755);
  std::vector<Architecture> found;
  for (int r = 1; r <= cfg.study_search_seeds; ++r) {
    RunConfig c = cfg;
    c.arch = search_dir(D, r) + "/arch.json";
    std::string how;
    found.push_back(retrain_architecture(c, &how));
    found.back().source = str("r", r, "/search");  // relative: a study folder moves as a whole
    write_text(A + "/" + found_name(r) + ".json", found.back().to_json());
  }
  const double target = found.front().macs();
  {
    RunConfig c = cfg;
    c.arch = "baseline";
    c.target_macs = target;
    c.target_params = 0;
    c.retrain_width = 0;
    std::string how;
    write_text(A + "/baseline.json", retrain_architecture(c, &how).to_json());
  }
  RandomArchOptions o;
  o.target_macs = target;
  o.tolerance = cfg.study_tolerance;
  for (int k = 1; k <= cfg.study_random; ++k) {
    const RandomArch ra = sample_random_like(found.front(), static_cast<uint64_t>(cfg.study_random_seed), k - 1, o);
    write_text(A + "/" + random_name(k) + ".json", ra.arch.to_json());
    std::cout << "== study: " << random_name(k) << ": width " << ra.width << ", " << ra.arch.live_ops() << " live ops, "
              << fmt("%.3fM", ra.arch.macs() / 1e6) << " MACs (found " << fmt("%.3fM", target / 1e6)
              << "); redraws: " << ra.block_redraws << " blocks, " << ra.width_redraws << " widths" << std::endl;
  }
  std::ostringstream p;
  p << "{\"format\": \"dsonas-study-plan\", \"format_version\": 1, \"target_macs\": " << fmt("%.0f", target)
    << ", \"tasks\": [";
  for (size_t i = 0; i < tasks.size(); ++i)
    p << (i ? "," : "") << "\n  {\"name\": " << json_quote(tasks[i].name)
      << ", \"group\": " << json_quote(tasks[i].group) << ", \"arch\": " << json_quote(tasks[i].arch)
      << ", \"seed\": " << tasks[i].seed << "}";
  p << "\n]}\n";
  write_text(D + "/plan.json", p.str());
}

/// One retrain task and its test evaluation (skipped when its eval.json exists).
int run_task(const RunConfig& cfg, const std::vector<std::string>& args, const Task& t, size_t index) {
  const std::string D = cfg.out, out = task_dir(D, t);
  Communicator& comm = Communicator::world();
  if (comm.root()) {  // a mark that this task ran now (slurm/study.sbatch checks that the step ran)
    ::mkdir((D + "/retrain").c_str(), 0755);
    write_text(str(D, "/retrain/task_", index, ".started"), t.name + "\n");
  }
  if (path_exists(eval_file(D, t))) {
    if (comm.root()) std::cout << "== study: " << t.name << " done" << std::endl;
    return kExitOk;
  }
  if (comm.root())
    std::cout << "== study: " << t.name << " → " << out << (path_exists(out + "/metrics.jsonl") ? " (resuming)" : "")
              << std::endl;
  comm.barrier();
  const RunConfig rc = stage_config(
      "retrain", stage_args(args, out,
                            {"--arch", D + "/archs/" + t.arch + ".json", "--seed", std::to_string(t.seed),
                             "--retrain.width", "0", "--retrain.target-macs", "0", "--retrain.target-params", "0"}));
  const int code = run_retrain(rc);
  if (code) return code;
  evaluate_network_file(stage_config("eval", eval_args(args, out)));
  return kExitOk;
}

struct Result {
  Task task;
  bool done = false;
  double top1 = 0, top5 = 0, macs = 0, params = 0;  // top-1/5 in percent
};

std::vector<Result> read_results(const std::string& D, const std::vector<Task>& tasks) {
  std::vector<Result> rs;
  for (const Task& t : tasks) {
    Result r;
    r.task = t;
    const std::string f = eval_file(D, t);
    if (path_exists(f)) {
      const JsonValue v = parse_json(read_text(f), f);
      JsonObject o(v, "", f);
      auto num = [&](const char* k) {
        const JsonValue* x = o.find(k);
        if (!x || x->kind != JsonValue::Num) o.bad(k, "missing or not a number");
        return std::atof(x->text.c_str());
      };
      r.top1 = 100 * num("top1");
      r.top5 = 100 * num("top5");
      r.macs = num("macs");
      r.params = num("params");
      r.done = true;
    }
    rs.push_back(r);
  }
  return rs;
}

std::string f2(double v) { return fmt("%.2f", v); }
std::string f3(double v) { return fmt("%.3f", v); }
std::string pval(double p) { return p < 1e-4 ? fmt("%.1e", p) : fmt("%.4f", p); }

std::string group_json(const GroupStats& g, const std::vector<double>& v) {
  std::string vals;
  for (size_t i = 0; i < v.size(); ++i) vals += str(i ? ", " : "", f2(v[i]));
  return str("{\"n\": ", g.n, ", \"mean\": ", fmt("%.6f", g.mean), ", \"sd\": ", fmt("%.6f", g.sd), ", \"ci95\": [",
             fmt("%.6f", g.ci_lo), ", ", fmt("%.6f", g.ci_hi), "], \"values\": [", vals, "]}");
}

std::string test_json(const WelchTest& w) {
  return str("{\"valid\": ", w.valid ? "true" : "false", ", \"diff\": ", fmt("%.6f", w.diff),
             ", \"t\": ", fmt("%.6f", w.t), ", \"df\": ", fmt("%.6f", w.df), ", \"p\": ", fmt("%.6g", w.p),
             ", \"ci95\": [", fmt("%.6f", w.ci_lo), ", ", fmt("%.6f", w.ci_hi),
             "], \"hedges_g\": ", fmt("%.6f", w.hedges_g), "}");
}

/// "found vs X: +0.41 points (95 % interval [a, b]), Welch t = …, p = … → verdict".
std::string verdict(const char* other, const WelchTest& w, int na, int nb) {
  if (!w.valid)
    return str("found vs ", other, ": no test (", na, " and ", nb, " values; each group needs two with some spread)");
  const bool sig = w.p < 0.05;
  std::string v;
  if (!sig)
    v = "not significant";
  else
    v = w.diff > 0 ? str("the found architecture is better than ", other, " (significant, p < 0.05)")
                   : str("the found architecture is WORSE than ", other, " (significant, p < 0.05)");
  return str("found vs ", other, ": ", fmt("%+.2f", w.diff), " points (95 % interval [", fmt("%+.2f", w.ci_lo), ", ",
             fmt("%+.2f", w.ci_hi), "]), Welch t = ", f3(w.t), ", df = ", f2(w.df), ", p = ", pval(w.p),
             ", Hedges' g = ", f2(w.hedges_g), " → ", v);
}

/// What backs the pooled test up: the random architectures as the units (the found
/// side its seeds with one search, the found architectures' means with several),
/// whether the random architectures differ among themselves (one-way ANOVA), and
/// the seed-to-seed sd within an architecture, pooled over every architecture.
struct Checks {
  WelchTest by_arch;
  int found_units = 0, random_units = 0;
  Anova random_anova, all_archs;
  int archs = 0;
};

Checks checks(const RunConfig& cfg, const std::vector<Result>& rs, const std::vector<double>& found_seeds) {
  std::vector<std::string> names;
  std::vector<std::vector<double>> by;
  std::vector<std::string> group;
  for (const Result& r : rs) {
    if (!r.done) continue;
    size_t i = 0;
    while (i < names.size() && names[i] != r.task.arch) ++i;
    if (i == names.size()) {
      names.push_back(r.task.arch);
      by.emplace_back();
      group.push_back(r.task.group);
    }
    by[i].push_back(r.top1);
  }
  Checks c;
  std::vector<double> found_means, random_means;
  std::vector<std::vector<double>> random_vals;
  for (size_t i = 0; i < names.size(); ++i) {
    if (group[i] == "found") found_means.push_back(group_stats(by[i]).mean);
    if (group[i] == "random") {
      random_means.push_back(group_stats(by[i]).mean);
      random_vals.push_back(by[i]);
    }
  }
  const std::vector<double>& fu = cfg.study_search_seeds > 1 ? found_means : found_seeds;
  c.by_arch = welch_test(fu, random_means);
  c.found_units = static_cast<int>(fu.size());
  c.random_units = static_cast<int>(random_means.size());
  c.random_anova = one_way_anova(random_vals);
  c.all_archs = one_way_anova(by);
  c.archs = static_cast<int>(names.size());
  return c;
}

/// One report over a set of finished retrains (DIR/looks.jsonl, one JSON object a line).
struct Look {
  int retrains = 0, tasks = 0;
  double p_random = -1, p_baseline = -1;  // −1: no test
};

/// A look as one JSON object (a line of looks.jsonl, an element of study.json's "looks").
std::string look_json(const Look& k) {
  auto p = [](double v) { return v < 0 ? std::string("null") : fmt("%.6g", v); };
  return str("{\"retrains\": ", k.retrains, ", \"tasks\": ", k.tasks, ", \"p_random\": ", p(k.p_random),
             ", \"p_baseline\": ", p(k.p_baseline), "}");
}

/// The looks so far, this one appended when the finished retrains differ from the
/// last look's (re-running the report on the same retrains is not a new look).
std::vector<Look> record_look(const std::string& D, int done, int tasks, const WelchTest& r, const WelchTest& b) {
  const std::string f = D + "/looks.jsonl";
  std::vector<Look> looks;
  std::string text = path_exists(f) ? read_text(f) : "";
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const JsonValue v = parse_json(line, f);
    JsonObject o(v, "", f);
    Look k;
    auto num = [&](const char* key, double dflt) {
      const JsonValue* x = o.find(key);
      return x && x->kind == JsonValue::Num ? std::atof(x->text.c_str()) : dflt;
    };
    k.retrains = static_cast<int>(num("retrains", 0));
    k.tasks = static_cast<int>(num("tasks", 0));
    k.p_random = num("p_random", -1);
    k.p_baseline = num("p_baseline", -1);
    looks.push_back(k);
  }
  if (!looks.empty() && looks.back().retrains == done && looks.back().tasks == tasks) return looks;
  Look k{done, tasks, r.valid ? r.p : -1, b.valid ? b.p : -1};
  looks.push_back(k);
  write_text(f, text + look_json(k) + "\n");
  return looks;
}

std::string anova_json(const Anova& a) {
  return str("{\"valid\": ", a.valid ? "true" : "false", ", \"F\": ", fmt("%.6f", a.F),
             ", \"df_between\": ", fmt("%.0f", a.df_between), ", \"df_within\": ", fmt("%.0f", a.df_within),
             ", \"p\": ", fmt("%.6g", a.p), "}");
}

std::string checks_md(const RunConfig& cfg, const Checks& c) {
  std::ostringstream m;
  m << "## Checks\n\n- Random architectures as the units: ";
  const std::string found_side =
      cfg.study_search_seeds > 1 ? str("the ", c.found_units, " found architectures' means") : "the found seeds";
  if (c.by_arch.valid)
    m << found_side << " against the " << c.random_units
      << " random architectures' means: " << fmt("%+.2f", c.by_arch.diff) << " points, Welch t = " << f3(c.by_arch.t)
      << ", df = " << f2(c.by_arch.df) << ", p = " << pval(c.by_arch.p)
      << (c.by_arch.p < 0.05 ? " (significant)" : " (not significant)")
      << ". This counts the spread between random architectures, not only between seeds.\n";
  else
    m << "no test (" << c.found_units << " found and " << c.random_units
      << " random units; each side needs two with some spread).\n";
  m << "- Do the random architectures differ among themselves? ";
  if (c.random_anova.valid)
    m << "One-way ANOVA F(" << fmt("%.0f", c.random_anova.df_between) << ", " << fmt("%.0f", c.random_anova.df_within)
      << ") = " << f3(c.random_anova.F) << ", p = " << pval(c.random_anova.p)
      << (c.random_anova.p < 0.05 ? ": they do, so the pooled random group mixes architectures of different "
                                    "quality; read the test above."
                                  : ": no sign of it, so pooling them is reasonable.")
      << "\n";
  else
    m << "no test (it needs two random architectures with two retrains each).\n";
  m << "- Seed-to-seed standard deviation within an architecture, pooled over the " << c.archs
    << " architectures: " << f3(c.all_archs.within_sd) << " points (" << fmt("%.0f", c.all_archs.df_within)
    << " degrees of freedom); a `dsonas pipeline` of this configuration judges its margin by it when "
       "`study.reference-sd` is set to it.\n\n";
  return m.str();
}

std::string looks_md(const std::vector<Look>& looks) {
  std::ostringstream m;
  auto p = [](double v) { return v < 0 ? std::string("no test") : pval(v); };
  m << "## Looks at this study\n\n";
  if (looks.size() <= 1) {
    m << "This is the only report written over these retrains' results (`looks.jsonl`).\n\n";
    return m.str();
  }
  m << "This is look " << looks.size() << " at this study (`looks.jsonl`): a report over a different set of "
    << "finished retrains each time.\n\n| look | retrains | p, found vs random | p, found vs hand-made "
       "|\n|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < looks.size(); ++i)
    m << "| " << i + 1 << " | " << looks[i].retrains << " of " << looks[i].tasks << " | " << p(looks[i].p_random)
      << " | " << p(looks[i].p_baseline) << " |\n";
  m << "\nThe p-values above are **not corrected for repeated looks**: every look at growing data is another "
       "chance of a false \"significant\" (reading 4 looks of a study grown from 3 to 6 seeds at 5 % each "
       "gives one 13 % of the time under the null: docs/results/fmnist-study-6seeds-2026-12-08/seqsim.py). Fix the "
       "number of seeds before the study and read the planned look, or confirm a result with a fresh study.\n\n";
  return m.str();
}

/// Runs utils/study_plot.py on the study (matplotlib): "" or why the picture is missing.
std::string plot(const std::string& D) {
  const std::string tool = find_tool("study_plot.py");  // DSONAS_HOME, else next to the binary (run/tools.hpp)
  if (tool.empty()) return "no picture: utils/study_plot.py not found (set DSONAS_HOME)";
  const std::string cmd = str(python_interpreter(), " '", tool, "' '", D, "' >/dev/null 2>'", D, "/study_plot.log'");
  if (std::system(cmd.c_str()) != 0) return str("no picture: ", tool, " failed (", D, "/study_plot.log)");
  std::remove((D + "/study_plot.log").c_str());
  return "";
}

void write_report(const RunConfig& cfg, const std::vector<Task>& tasks) {
  const std::string D = cfg.out;
  const std::vector<Result> rs = read_results(D, tasks);
  const char* groups[] = {"found", "baseline", "random"};
  std::vector<double> vals[3], macs[3], params[3];
  int done = 0;
  for (const Result& r : rs) {
    if (!r.done) continue;
    ++done;
    const int g = r.task.group == "found" ? 0 : r.task.group == "baseline" ? 1 : 2;
    vals[g].push_back(r.top1);
    macs[g].push_back(r.macs);
    params[g].push_back(r.params);
  }
  GroupStats gs[3];
  for (int g = 0; g < 3; ++g) gs[g] = group_stats(vals[g]);
  const WelchTest vs_random = welch_test(vals[0], vals[2]), vs_base = welch_test(vals[0], vals[1]);
  const Checks ck = checks(cfg, rs, vals[0]);
  const std::vector<Look> looks = record_look(D, done, static_cast<int>(tasks.size()), vs_random, vs_base);
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
  };
  double target = 0;
  if (path_exists(D + "/plan.json")) {
    const JsonValue pv = parse_json(read_text(D + "/plan.json"), D + "/plan.json");
    for (const auto& kv : pv.obj)
      if (kv.first == "target_macs") target = std::atof(kv.second.text.c_str());
  }

  // study.csv: one row per task
  std::ostringstream csv;
  csv << "task,group,arch,seed,done,top1,top5,macs,params\n";
  for (const Result& r : rs)
    csv << r.task.name << "," << r.task.group << "," << r.task.arch << "," << r.task.seed << "," << (r.done ? 1 : 0)
        << "," << (r.done ? f2(r.top1) : "") << "," << (r.done ? f2(r.top5) : "") << ","
        << (r.done ? fmt("%.0f", r.macs) : "") << "," << (r.done ? fmt("%.0f", r.params) : "") << "\n";
  write_text(D + "/study.csv", csv.str());

  // the settings given on the command line, apart from how the study is run
  // (--study.prepare/task/report/plan), so every way of running it reports the same
  std::vector<std::string> settings;
  std::string typed_all;
  for (const auto& [key, typed] : cfg.cli_settings)
    if (key != "study.prepare" && key != "study.task" && key != "study.report" && key != "study.plan") {
      settings.push_back(typed);
      typed_all += (typed_all.empty() ? "" : " ") + typed;
    }

  // study.json
  std::ostringstream js;
  js << "{\"format\": \"dsonas-study\", \"format_version\": 1, \"config\": "
     << json_quote(cfg.config_file.empty() ? "(command line)" : cfg.config_file) << ", \"command_line\": [";
  for (size_t i = 0; i < settings.size(); ++i) js << (i ? ", " : "") << json_quote(settings[i]);
  js << "], \"search_seeds\": " << cfg.study_search_seeds << ", \"random\": " << cfg.study_random
     << ", \"seeds\": " << cfg.study_seeds << ", \"tolerance\": " << cfg.study_tolerance
     << ", \"target_macs\": " << fmt("%.0f", target) << ", \"tasks_done\": " << done << ", \"tasks\": " << tasks.size()
     << ",\n \"results\": [";
  for (size_t i = 0; i < rs.size(); ++i) {
    const Result& r = rs[i];
    js << (i ? "," : "") << "\n  {\"task\": " << json_quote(r.task.name) << ", \"group\": " << json_quote(r.task.group)
       << ", \"arch\": " << json_quote(r.task.arch) << ", \"seed\": " << r.task.seed
       << ", \"done\": " << (r.done ? "true" : "false");
    if (r.done)
      js << ", \"top1\": " << f2(r.top1) << ", \"top5\": " << f2(r.top5) << ", \"macs\": " << fmt("%.0f", r.macs)
         << ", \"params\": " << fmt("%.0f", r.params);
    js << "}";
  }
  js << "],\n \"groups\": {";
  for (int g = 0; g < 3; ++g) js << (g ? ", " : "") << "\"" << groups[g] << "\": " << group_json(gs[g], vals[g]);
  js << "},\n \"tests\": {\"found_vs_random\": " << test_json(vs_random)
     << ", \"found_vs_baseline\": " << test_json(vs_base)
     << "},\n \"checks\": {\"found_vs_random_architectures\": " << test_json(ck.by_arch)
     << ", \"found_units\": " << ck.found_units << ", \"random_units\": " << ck.random_units
     << ", \"random_anova\": " << anova_json(ck.random_anova)
     << ", \"within_architecture_sd\": " << fmt("%.6f", ck.all_archs.within_sd)
     << ", \"within_architecture_df\": " << fmt("%.0f", ck.all_archs.df_within) << ", \"architectures\": " << ck.archs
     << "},\n \"looks\": [";
  for (size_t i = 0; i < looks.size(); ++i) js << (i ? ", " : "") << look_json(looks[i]);
  js << "]}\n";
  write_text(D + "/study.json", js.str());

  const std::string why_no_plot = plot(D);

  // study.md
  std::ostringstream m;
  m << "# dsonas study: does the search beat chance?\n\n"
    << "Configuration `" << (cfg.config_file.empty() ? "(command line)" : cfg.config_file) << "`"
    << (settings.empty() ? "" : str(" with `", typed_all, "` on the command line")) << ": " << cfg.study_search_seeds
    << " search" << (cfg.study_search_seeds > 1 ? "es" : "") << ", the hand-made baseline (" << cfg.baseline_op
    << " chains) and " << cfg.study_random
    << " random architectures of the same cost (per block the found architecture's number of live λ entries at "
       "random positions, §6.1 applied, reductions as searched, MACs within ±"
    << fmt("%.1f", 100 * cfg.study_tolerance) << " % of " << fmt("%.3fM", target / 1e6) << "), each retrained with "
    << cfg.study_seeds << " seed" << (cfg.study_seeds > 1 ? "s" : "")
    << " under the same budget. Test accuracy (top-1, %) "
    << "of " << done << " of " << tasks.size() << " retrains"
    << (done < static_cast<int>(tasks.size()) ? " (the study is not finished: re-run the command to continue)" : "")
    << ".\n\n";
  if (why_no_plot.empty())
    m << "![test accuracy per group and against MACs](study.png)\n\n";
  else
    m << "(" << why_no_plot << ")\n\n";
  m << "| group | n | mean | sd | 95 % interval | MACs | parameters | values "
       "|\n|---|---:|---:|---:|---|---:|---:|---|\n";
  for (int g = 0; g < 3; ++g) {
    std::string v;
    for (size_t i = 0; i < vals[g].size(); ++i) v += str(i ? ", " : "", f2(vals[g][i]));
    m << "| " << groups[g] << " | " << gs[g].n << " | " << f2(gs[g].mean) << " | " << f2(gs[g].sd) << " | ["
      << f2(gs[g].ci_lo) << ", " << f2(gs[g].ci_hi) << "] | " << fmt("%.2fM", mean(macs[g]) / 1e6) << " | "
      << fmt("%.3fM", mean(params[g]) / 1e6) << " | " << v << " |\n";
  }
  m << "\n**" << verdict("random", vs_random, gs[0].n, gs[2].n) << ".**\n\n**"
    << verdict("hand-made", vs_base, gs[0].n, gs[1].n) << ".**\n\n"
    << "Welch's unequal-variance t-test (two-sided), Student's t from Boost.Math; the random group pools every "
       "random architecture and seed.\n\n"
    << checks_md(cfg, ck) << looks_md(looks)
    << "## Every retrain\n\n| task | architecture | seed | top-1 | top-5 | MACs | parameters "
       "|\n|---|---|---:|---:|---:|---:|---:|\n";
  for (const Result& r : rs) {
    m << "| " << r.task.name << " | " << r.task.arch << " | " << r.task.seed << " | ";
    if (r.done)
      m << f2(r.top1) << " | " << f2(r.top5) << " | " << fmt("%.2fM", r.macs / 1e6) << " | "
        << fmt("%.3fM", r.params / 1e6) << " |\n";
    else
      m << "(not run) | | | |\n";
  }
  m << "\nArchitectures: `archs/`; retrains: `retrain/<task>/` (`eval_test/` holds per-class accuracy and the "
       "confusion matrix); the numbers: `study.json`, `study.csv`.\n";
  write_text(D + "/study.md", m.str());
  std::cout << "== study: " << verdict("random", vs_random, gs[0].n, gs[2].n)
            << "\n== study: " << verdict("hand-made", vs_base, gs[0].n, gs[1].n) << "\n== study: report " << D
            << "/study.md (" << done << " of " << tasks.size() << " retrains)" << std::endl;
}

}  // namespace

int run_study(int argc, char** argv) {
  const RunConfig cfg = parse_config("study", argc, argv);
  Communicator& comm = Communicator::world();
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string D = cfg.out;
  const std::vector<Task> tasks = plan_tasks(cfg);
  if (cfg.study_plan) {
    if (comm.root())
      for (size_t i = 0; i < tasks.size(); ++i)
        std::cout << i << " " << tasks[i].name << " " << tasks[i].group << " archs/" << tasks[i].arch << ".json seed "
                  << tasks[i].seed << "\n";
    return kExitOk;
  }
  if (cfg.study_task >= static_cast<int>(tasks.size()))
    fail_usage(str("--study.task: ", cfg.study_task, " but the study has ", tasks.size(), " tasks (0 .. ",
                   tasks.size() - 1, ")"));
  const bool prepare = !cfg.study_report && cfg.study_task < 0;
  if (comm.root()) {
    prepare_out_dir(D, true);
    if (prepare) write_text(D + "/study.cfg", cfg.resolved);
  }
  comm.barrier();
  if (!cfg.study_report && !path_exists(D + "/plan.json")) {
    if (cfg.study_task >= 0) fail_usage(str("--study.task: ", D, "/plan.json is missing: run --study.prepare first"));
    for (int r = 1; r <= cfg.study_search_seeds; ++r) {
      const std::string R = search_dir(D, r), seed = std::to_string(cfg.seed + r - 1);
      if (comm.root()) std::cout << "== study: search " << r << " (seed " << seed << ") → " << R << std::endl;
      if (comm.root()) ::mkdir(R.c_str(), 0755);
      comm.barrier();
      int rc = run_pretrain(stage_config("pretrain", stage_args(args, R + "/pretrain", {"--seed", seed})));
      if (rc) return rc;
      rc = run_search(
          stage_config("search", stage_args(args, R + "/search", {"--init", R + "/pretrain", "--seed", seed})));
      if (rc) return rc;
      if (!path_exists(R + "/arch.json")) {
        rc = derive_on_root(R + "/search", R + "/arch.json", R + "/arch.png");
        if (rc) return rc;
      }
    }
    if (comm.root()) write_architectures(cfg, tasks);
    comm.barrier();
  }
  if (cfg.study_prepare) return kExitOk;
  if (!cfg.study_report) {
    std::vector<double> took;  // wall seconds of the retrains this invocation ran
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (cfg.study_task >= 0 && static_cast<int>(i) != cfg.study_task) continue;
      const bool fresh = !path_exists(eval_file(D, tasks[i]));
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = run_task(cfg, args, tasks[i], i);
      if (rc) return rc;
      if (!fresh || cfg.study_task >= 0) continue;
      took.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      size_t left = 0;
      for (size_t k = i + 1; k < tasks.size(); ++k) left += path_exists(eval_file(D, tasks[k])) ? 0 : 1;
      std::vector<double> sorted = took;
      std::sort(sorted.begin(), sorted.end());
      const double median = sorted[sorted.size() / 2];
      if (comm.root())
        std::cout << "== study: " << tasks[i].name << " took " << human_duration(took.back()) << "; " << left
                  << " retrain" << (left == 1 ? "" : "s") << " left"
                  << (left ? str(", ~", human_duration(median * static_cast<double>(left)), " (median retrain so far ",
                                 human_duration(median), ", of ", took.size(), ")")
                           : "")
                  << std::endl;
    }
    if (cfg.study_task >= 0) return kExitOk;
  }
  if (comm.root()) write_report(cfg, tasks);
  comm.barrier();
  return kExitOk;
}

}  // namespace dsonas
