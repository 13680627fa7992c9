// Loads the real Fashion-MNIST when Debian's dataset-fashion-mnist is installed.
#include <gtest/gtest.h>

#include "lockstep/data/data_loader.h"
#include "lockstep/data/idx.h"

namespace lockstep::data {
namespace {

TEST(FashionMnist, LoadsBothSplitsWhenInstalled) {
  auto dir = find_fashion_mnist_dir();
  if (!dir) GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  Dataset train = load_mnist(*dir, Split::train);
  Dataset test = load_mnist(*dir, Split::test);
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(train.sample_shape(), (std::vector<int64_t>{1, 28, 28}));
  // The dataset is balanced: 6000 training and 1000 test images per class.
  std::vector<int> train_counts(10), test_counts(10);
  for (int64_t i = 0; i < train.size(); ++i) ++train_counts[static_cast<size_t>(train.label(i))];
  for (int64_t i = 0; i < test.size(); ++i) ++test_counts[static_cast<size_t>(test.label(i))];
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(train_counts[static_cast<size_t>(c)], 6000);
    EXPECT_EQ(test_counts[static_cast<size_t>(c)], 1000);
  }
  // The pixel mean of the training set is the well-known 0.2860.
  double sum = 0;
  for (int64_t i = 0; i < train.size(); ++i)
    for (uint8_t p : train.u8_features(i)) sum += p;
  EXPECT_NEAR(sum / (60000.0 * 784 * 255), 0.2860, 1e-3);

  // Exact evaluation over 3 ranks reads each test image once.
  int64_t seen = 0;
  for (int r = 0; r < 3; ++r) {
    DataLoader l(test,
                 DistributedSampler({.dataset_size = test.size(),
                                     .rank = r,
                                     .world_size = 3,
                                     .shuffle = false,
                                     .remainder = Remainder::exact}),
                 {.batch_size = 256, .transform = {.mean = {0.2860f}, .std = {0.3530f}}});
    while (const Batch* b = l.next()) seen += b->size();
  }
  EXPECT_EQ(seen, 10000);
}

}  // namespace
}  // namespace lockstep::data
