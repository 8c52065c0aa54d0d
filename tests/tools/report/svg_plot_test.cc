#include "tools/report/svg_plot.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/report/html.h"

namespace rlhf::report {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(EscapeHtml, EscapesMarkupAndQuotes) {
  EXPECT_EQ(EscapeHtml("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;");
  EXPECT_EQ(EscapeHtml("plain text, naïve"), "plain text, naïve");
  EXPECT_EQ(EscapeHtml("a\xFF"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");                                                     // invalid UTF-8 -> U+FFFD
  EXPECT_EQ(EscapeHtml(std::string("a\0b\x01\tc\n", 7)), "ab\tc\n");  // control characters XML forbids
}

TEST(FormatNumber, UsesSignificantDigits) {
  EXPECT_EQ(FormatNumber(0.123456), "0.1235");
  EXPECT_EQ(FormatNumber(1500), "1500");
  EXPECT_EQ(FormatNumber(0), "0");
  EXPECT_EQ(FormatNumber(-2.5), "-2.5");
  EXPECT_EQ(FormatNumber(1e-7), "1e-07");
  EXPECT_EQ(FormatNumber(std::nan("")), "-");
}

TEST(NiceTicks, PicksRoundSteps) {
  EXPECT_THAT(NiceTicks(0, 1), ElementsAre(0, 0.25, 0.5, 0.75, 1));
  EXPECT_THAT(NiceTicks(0, 300), ElementsAre(0, 100, 200, 300));
  EXPECT_THAT(NiceTicks(3, 287), ElementsAre(0, 100, 200, 300));
  std::vector<double> ticks = NiceTicks(-0.3, 1.7);
  EXPECT_THAT(ticks, ElementsAre(DoubleNear(-0.5, 1e-12), 0, DoubleNear(0.5, 1e-12), DoubleNear(1, 1e-12),
                                 DoubleNear(1.5, 1e-12), DoubleNear(2, 1e-12)));
  EXPECT_THAT(NiceTicks(5, 5), ElementsAre(5));  // degenerate: the one value
}

TEST(RenderLinePlot, DrawsEachSeriesWithALegend) {
  PlotSeries train{"train/loss", {{0, 2.0}, {10, 1.0}, {20, 0.5}}};
  PlotSeries val{"val/<loss>", {{0, 2.2}, {20, 0.7}}};
  PlotOptions options;
  options.title = "loss & more";
  const std::string svg = RenderLinePlot({train, val}, options);
  EXPECT_THAT(svg, StartsWith("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(Count(svg, "<polyline"), 2u);
  EXPECT_THAT(svg, HasSubstr("loss &amp; more"));
  EXPECT_THAT(svg, HasSubstr(">val/&lt;loss&gt;</text>"));  // legend, escaped
  EXPECT_THAT(svg, Not(HasSubstr("<loss>")));
  EXPECT_THAT(svg, HasSubstr(">step</text>"));
}

TEST(RenderLinePlot, SkipsNonFiniteValuesAndSaysWhenThereIsNoData) {
  const std::string single = RenderLinePlot({{"x", {{5, 1.0}, {6, std::nan("")}}}}, PlotOptions{});
  EXPECT_EQ(Count(single, "<circle"), 1u);
  EXPECT_EQ(Count(single, "<polyline"), 0u);
  const std::string empty = RenderLinePlot({{"x", {{1, std::nan("")}}}}, PlotOptions{});
  EXPECT_THAT(empty, HasSubstr("no data"));
  EXPECT_THAT(RenderLinePlot({}, PlotOptions{}), HasSubstr("no data"));
}

TEST(RenderLinePlot, ThinsLongSeries) {
  PlotSeries long_series{"reward", {}};
  for (int i = 0; i < 10000; ++i) long_series.points.emplace_back(i, i % 7);
  PlotOptions options;
  options.max_points_per_series = 100;
  const std::string svg = RenderLinePlot({long_series}, options);
  const size_t begin = svg.find("points=\"") + 8;
  const std::string points = svg.substr(begin, svg.find('"', begin) - begin);
  const std::vector<std::string> pairs = absl::StrSplit(points, ' ');
  EXPECT_EQ(pairs.size(), 100u);
}

TEST(RenderIntervalChart, ColoursByTheSideOfOneHalf) {
  const std::string svg = RenderIntervalChart({{"above", 0.6, 0.55, 0.65}, {"across", 0.52, 0.48, 0.56}});
  EXPECT_EQ(Count(svg, "<circle"), 2u);
  EXPECT_THAT(svg, HasSubstr("stroke=\"#009E73\""));  // entirely above 0.5
  EXPECT_THAT(svg, HasSubstr("stroke=\"#0072B2\""));  // contains 0.5
  EXPECT_THAT(svg, HasSubstr("stroke-dasharray"));
}

}  // namespace
}  // namespace rlhf::report
