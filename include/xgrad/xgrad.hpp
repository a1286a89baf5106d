// xgrad: everything in one include.
#pragma once

#include "xgrad/autograd.hpp"
#include "xgrad/format.hpp"
#include "xgrad/gradcheck.hpp"
#include "xgrad/nn/functional.hpp"
#include "xgrad/nn/init.hpp"
#include "xgrad/nn/layers.hpp"
#include "xgrad/nn/linear.hpp"
#include "xgrad/nn/module.hpp"
#include "xgrad/ops.hpp"
#include "xgrad/optim/adam.hpp"
#include "xgrad/optim/clip.hpp"
#include "xgrad/optim/optimizer.hpp"
#include "xgrad/optim/scheduler.hpp"
#include "xgrad/optim/sgd.hpp"
#include "xgrad/serialize.hpp"
#include "xgrad/tensor.hpp"
