// The exact DSML replay memory: bounded LRU of tool call id -> sampled block bytes.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "server/tool_replay.h"

namespace ds4::server {
namespace {

TEST(ToolReplay, RemembersExactBytesPerId) {
  ToolReplay m(10);
  const std::string block = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  m.insert("call_a", block);
  m.insert("call_b", block);  // a second call of the same block shares its bytes
  EXPECT_EQ(m.lookup("call_a"), block);
  EXPECT_EQ(m.lookup("call_b"), block);
  EXPECT_FALSE(m.lookup("call_c").has_value());
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.block_bytes(), block.size());
  m.insert("call_a", "other");  // a newer mapping replaces the old one
  EXPECT_EQ(m.lookup("call_a"), "other");
  EXPECT_EQ(m.block_bytes(), block.size() + 5);
}

TEST(ToolReplay, EvictsLeastRecentlyUsedIds) {
  ToolReplay m(3);
  m.insert("a", "A");
  m.insert("b", "B");
  m.insert("c", "C");
  ASSERT_TRUE(m.lookup("a"));  // a becomes the most recent; b is now the oldest
  m.insert("d", "D");
  EXPECT_FALSE(m.contains("b"));
  EXPECT_TRUE(m.contains("a") && m.contains("c") && m.contains("d"));
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.block_bytes(), 3u);
}

TEST(ToolReplay, ByteBudgetBoundsDistinctBlocks) {
  ToolReplay m(100, 10);
  m.insert("a", "12345");
  m.insert("b", "67890");
  EXPECT_EQ(m.block_bytes(), 10u);
  m.insert("c", "xyz");  // over budget: the oldest goes
  EXPECT_FALSE(m.contains("a"));
  EXPECT_EQ(m.block_bytes(), 8u);
  m.insert("d", std::string(11, 'x'));  // alone larger than the budget: not stored
  EXPECT_FALSE(m.contains("d"));
  EXPECT_TRUE(m.contains("b") && m.contains("c"));
}

TEST(ToolReplay, EntriesRestoreContentAndRecency) {
  ToolReplay m(3);
  m.insert("a", "A");
  m.insert("b", "B");
  m.insert("c", "A");
  ASSERT_TRUE(m.lookup("a"));
  auto entries = m.entries();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0], std::make_pair(std::string("b"), std::string("B")));
  EXPECT_EQ(entries[2], std::make_pair(std::string("a"), std::string("A")));

  ToolReplay copy(3);
  for (const auto& [id, dsml] : entries) copy.insert(id, dsml);
  EXPECT_EQ(copy.entries(), entries);
  copy.insert("d", "D");  // the restored order decides what goes first
  EXPECT_FALSE(copy.contains("b"));
}

TEST(ToolReplay, DisabledMemoryStoresNothing) {
  ToolReplay m(0);
  EXPECT_FALSE(m.enabled());
  m.insert("a", "A");
  EXPECT_FALSE(m.lookup("a").has_value());
  EXPECT_EQ(m.size(), 0u);
  m.insert("", "A");
  ToolReplay on(5);
  on.insert("", "A");
  on.insert("x", "");
  EXPECT_EQ(on.size(), 0u);
}

TEST(ToolReplay, NewIdsAreRandomHexAndUnique) {
  ToolReplay m(10);
  std::set<std::string> seen;
  const std::regex shape("toolu_[0-9a-f]{32}");
  for (int i = 0; i < 200; ++i) {
    std::string id = m.new_id("toolu_");
    EXPECT_TRUE(std::regex_match(id, shape)) << id;
    EXPECT_TRUE(seen.insert(id).second);
  }
  EXPECT_TRUE(std::regex_match(ToolReplay::random_id("call_"), std::regex("call_[0-9a-f]{32}")));
}

}  // namespace
}  // namespace ds4::server
