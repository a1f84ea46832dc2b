// test_args.cpp — the option reader of derive, export and inspect (run/args.hpp): values,
// ranges, positionals, --help, and the one-line usage errors (exit 2); what the
// configuration reader (run/config.hpp) records of the command line; and the arguments
// `pipeline` and `study` hand their stages (run/stages.hpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "dsonas/core/error.hpp"
#include "dsonas/run/args.hpp"
#include "dsonas/run/config.hpp"
#include "../../src/run/stages.hpp"

namespace dsonas {
namespace {

/// argv of "cmd" + words; the strings live as long as the object.
struct Argv {
  explicit Argv(std::vector<std::string> w) : words(std::move(w)) {
    words.insert(words.begin(), "cmd");
    for (std::string& s : words) ptrs.push_back(&s[0]);
  }
  int argc() const { return static_cast<int>(ptrs.size()); }
  char** argv() { return ptrs.data(); }
  std::vector<std::string> words;
  std::vector<char*> ptrs;
};

/// The usage error `words` give, or "" when they parse.
std::string error_of(std::vector<std::string> words) {
  std::string run, file;
  int n = 0, k = 0;
  double x = 0;
  CommandArgs a("derive", "usage\n", "dsonas derive --help");
  bool strict = false;
  a.text("--run", &run).integer("--width", &n, 1, 100).integer("--level", &k, 0, 9).number("--tol", &x, 1e-6, 1);
  a.integer("--big", &k, 1, 1000000);
  a.flag("--strict", &strict).positional(&file);
  Argv av(std::move(words));
  try {
    a.parse(av.argc(), av.argv());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), kExitUsage) << e.what();
    return e.what();
  }
  return "";
}

TEST(CommandArgs, ReadsEveryKindOfOption) {
  std::string run, file;
  int n = 0;
  double x = 0;
  CommandArgs a("derive", "usage\n", "dsonas derive --help");
  bool strict = false, quiet = false;
  a.text("--run", &run).integer("--width", &n, 1, 100).number("--tol", &x, 0, 1).positional(&file);
  a.flag("--strict", &strict).flag("--quiet", &quiet);
  Argv av({"F.h5", "--run", "DIR", "--width", "12", "--strict", "--tol", "0.25"});
  EXPECT_TRUE(a.parse(av.argc(), av.argv()));
  EXPECT_EQ(run, "DIR");
  EXPECT_EQ(n, 12);
  EXPECT_EQ(x, 0.25);
  EXPECT_EQ(file, "F.h5");
  EXPECT_TRUE(strict);
  EXPECT_FALSE(quiet);
  EXPECT_TRUE(a.given("--tol"));
  EXPECT_FALSE(a.given("--quiet"));
  // the value joined with '=' (a value may hold '=' itself)
  CommandArgs b("derive", "usage\n", "dsonas derive --help");
  std::string out, bare;
  b.text("--run", &run).text("--out", &out).integer("--width", &n, 1, 100).number("--tol", &x, 0, 1);
  Argv bv({"--run=a=b", "--width=7", "--tol=0.5", "--out=", "x=y"});
  b.positional(&bare);
  EXPECT_TRUE(b.parse(bv.argc(), bv.argv()));
  EXPECT_EQ(run, "a=b");
  EXPECT_EQ(n, 7);
  EXPECT_EQ(x, 0.5);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(b.given("--out")) << "given, with an empty value";
  EXPECT_EQ(bare, "x=y") << "a bare argument with '=' is the positional";
}

TEST(CommandArgs, HelpPrintsTheUsageAndStops) {
  std::string run;
  CommandArgs a("derive", "usage: dsonas derive …\n", "dsonas derive --help");
  a.text("--run", &run);
  Argv av({"--help", "--run", "DIR"});
  testing::internal::CaptureStdout();
  EXPECT_FALSE(a.parse(av.argc(), av.argv()));
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "usage: dsonas derive …\n");
  EXPECT_EQ(run, "") << "nothing after --help is read";
}

TEST(CommandArgs, EveryMistakeIsOneUsageLineNamingTheOption) {
  EXPECT_EQ(error_of({"--run", "a"}), "");
  EXPECT_EQ(error_of({"--run"}), "derive: --run needs a value (dsonas derive --help)");
  EXPECT_EQ(error_of({"--width", "0"}), "derive: --width: expected an integer in [1, 100] (got '0')");
  EXPECT_EQ(error_of({"--width", "12x"}), "derive: --width: expected an integer in [1, 100] (got '12x')");
  EXPECT_EQ(error_of({"--big", "0"}), "derive: --big: expected a positive integer (got '0')");
  EXPECT_EQ(error_of({"--width", "101"}), "derive: --width: expected an integer in [1, 100] (got '101')")
      << "'positive' only where the upper bound is out of sight (hi >= 10^6)";
  EXPECT_EQ(error_of({"--level", "10"}), "derive: --level: expected an integer in [0, 9] (got '10')");
  EXPECT_EQ(error_of({"--tol", "2"}), "derive: --tol: expected a number in [1e-06, 1] (got '2')");
  EXPECT_EQ(error_of({"--tol", "nan"}), "derive: --tol: expected a number in [1e-06, 1] (got 'nan')");
  EXPECT_EQ(error_of({"--tol", ""}), "derive: --tol: expected a number in [1e-06, 1] (got '')");
  EXPECT_EQ(error_of({"--width=0"}), "derive: --width: expected an integer in [1, 100] (got '0')");
  EXPECT_EQ(error_of({"--strict"}), "");
  EXPECT_EQ(error_of({"--strict=1"}), "derive: --strict takes no value (dsonas derive --help)");
  EXPECT_EQ(error_of({"--bogus"}), "derive: unexpected argument '--bogus' (dsonas derive --help)");
  EXPECT_EQ(error_of({"--bogus=1"}), "derive: unexpected argument '--bogus=1' (dsonas derive --help)");
  EXPECT_EQ(error_of({"--wid", "3"}), "derive: unexpected argument '--wid' (dsonas derive --help)")
      << "no abbreviations";
  EXPECT_EQ(error_of({"a.h5", "b.h5"}), "derive: unexpected argument 'b.h5' (dsonas derive --help)")
      << "one positional only";
}

// parse_config keeps the options typed on the command line, in order and as typed
// (a study report lists them): not --config and --out, not the file's settings.
TEST(ParseConfig, RecordsTheCommandLineSettings) {
  char path[] = "/tmp/dsonas_test_cfg_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "[search]\ngamma = 0.005\n";
  }
  Argv av(
      {"--config", path, "--search.gamma", "0.01", "--out", "/tmp/x", "--threads=1", "--data.dataset", "synthetic"});
  const RunConfig c = parse_config("search", av.argc(), av.argv());
  std::remove(path);
  const std::vector<std::pair<std::string, std::string>> want = {{"search.gamma", "--search.gamma 0.01"},
                                                                 {"threads", "--threads=1"},
                                                                 {"data.dataset", "--data.dataset synthetic"}};
  EXPECT_EQ(c.cli_settings, want);
  EXPECT_DOUBLE_EQ(c.gamma, 0.01);  // the command line wins over the file
}

// A stage gets the parent's arguments with the options the parent sets for it replaced,
// not repeated (Boost refuses an option given twice: `study --seed 7` once failed so),
// and --resume exactly when its folder holds a run, whatever the parent was given.
TEST(StageArgs, TheParentsSettingsForTheStageReplaceTheUsers) {
  const std::vector<std::string> parent = {"--seed",         "7",         "--out",         "/tmp/parent", "--resume",
                                           "--data.dataset", "synthetic", "--arch=x.json", "--threads=1"};
  char dir[] = "/tmp/dsonas_test_stage_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string out = dir;
  const std::vector<std::string> fresh = stages::stage_args(parent, out, {"--seed", "9", "--arch", "a.json"});
  const std::vector<std::string> want = {"--data.dataset", "synthetic", "--threads=1", "--out", out,
                                         "--seed",         "9",         "--arch",      "a.json"};
  EXPECT_EQ(fresh, want);
  const RunConfig c = stages::stage_config("pretrain", stages::stage_args(parent, out, {"--seed", "9"}));
  EXPECT_EQ(c.seed, 9u);
  EXPECT_EQ(c.out, out);
  EXPECT_FALSE(c.resume);
  std::ofstream(out + "/metrics.jsonl") << "{}\n";
  const std::vector<std::string> again = stages::stage_args(parent, out, {"--seed", "9"});
  EXPECT_EQ(std::count(again.begin(), again.end(), "--resume"), 1);
  EXPECT_EQ(std::count(again.begin(), again.end(), "--seed"), 1);
  EXPECT_TRUE(stages::stage_config("pretrain", again).resume);
  std::remove((out + "/metrics.jsonl").c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace dsonas
