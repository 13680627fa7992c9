include(GNUInstallDirs)

# lockstep_add_library(NAME layer SOURCES ... DEPS ...): one library per layer, shared or
# static as BUILD_SHARED_LIBS says (shared by default: see the top CMakeLists.txt).
function(lockstep_add_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} ${A_SOURCES})
  # Installed beside each other in <libdir>: they find each other through $ORIGIN.
  set_target_properties(${name} PROPERTIES VERSION ${PROJECT_VERSION}
    SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR} INSTALL_RPATH "$ORIGIN"
    DEFINE_SYMBOL "")  # no <name>_EXPORTS: nothing uses it, and objects stay the same as static
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/src>
    $<BUILD_INTERFACE:${CMAKE_BINARY_DIR}/generated>
    $<INSTALL_INTERFACE:include>)
  target_link_libraries(${name} PUBLIC ${A_DEPS})
  target_compile_features(${name} PUBLIC cxx_std_20)  # the headers need it, here and installed
  lockstep_install_layer(${name})
endfunction()

# lockstep_install_layer(lockstep_<layer>): the install rules of one layer library, so that
# `cmake --install` yields a package `find_package(lockstep)` can use. The library is
# exported as lockstep::<layer> (aliased under that name in the build tree too, so code
# linking lockstep::ddp builds the same in-tree and against an installed lockstep); its
# headers go to include/lockstep/<layer>/ (a subfolder with its own CMakeLists.txt is a
# layer of its own and installs itself).
function(lockstep_install_layer name)
  string(REGEX REPLACE "^lockstep_" "" short ${name})
  set_target_properties(${name} PROPERTIES EXPORT_NAME ${short})
  add_library(lockstep::${short} ALIAS ${name})
  install(TARGETS ${name} EXPORT lockstepTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  set_property(GLOBAL APPEND PROPERTY LOCKSTEP_LAYERS ${name})
  set(excludes)
  file(GLOB children LIST_DIRECTORIES true ${CMAKE_CURRENT_SOURCE_DIR}/*)
  foreach(child ${children})
    if(IS_DIRECTORY ${child} AND EXISTS ${child}/CMakeLists.txt)
      get_filename_component(child_name ${child} NAME)
      list(APPEND excludes PATTERN ${child_name} EXCLUDE)
    endif()
  endforeach()
  file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR})
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${rel}
          FILES_MATCHING PATTERN "*.h" ${excludes})
endfunction()

# lockstep_install_package(): the package files, after every layer has been added:
# lockstepTargets.cmake (every layer as lockstep::<layer>, and lockstep::lockstep, all of
# them but the LibTorch adapter), lockstepConfig.cmake (finds the dependencies the layers
# were built with), lockstepConfigVersion.cmake and lockstep.pc (pkg-config).
function(lockstep_install_package)
  include(CMakePackageConfigHelpers)
  set(dest ${CMAKE_INSTALL_LIBDIR}/cmake/lockstep)
  # The umbrella target: every layer a training program may use (not lockstep::torch, which
  # brings LibTorch), so `target_link_libraries(app PRIVATE lockstep::lockstep)` is enough.
  get_property(layers GLOBAL PROPERTY LOCKSTEP_LAYERS)
  list(REMOVE_ITEM layers lockstep_torch)
  add_library(lockstep_all INTERFACE)
  target_link_libraries(lockstep_all INTERFACE ${layers})
  set_target_properties(lockstep_all PROPERTIES EXPORT_NAME lockstep)
  add_library(lockstep::lockstep ALIAS lockstep_all)
  install(TARGETS lockstep_all EXPORT lockstepTargets)
  lockstep_install_pkgconfig("${layers}")
  # Generated headers: lockstep/config.h and lockstep/comm/backends/config.h.
  install(DIRECTORY ${CMAKE_BINARY_DIR}/generated/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          FILES_MATCHING PATTERN "*.h")
  install(EXPORT lockstepTargets NAMESPACE lockstep:: DESTINATION ${dest})
  foreach(b MPI GLOO NCCL DNNL)
    if(LOCKSTEP_WITH_${b})  # cache options: the backends' (comm/backends), oneDNN's (nn)
      set(LOCKSTEP_HAVE_${b} 1)
    else()
      set(LOCKSTEP_HAVE_${b} 0)
    endif()
  endforeach()
  if(BUILD_SHARED_LIBS)
    set(LOCKSTEP_SHARED 1)
  else()
    set(LOCKSTEP_SHARED 0)
  endif()
  set(LOCKSTEP_HAVE_TORCH 0)
  if(TARGET lockstep_torch)  # the LibTorch adapter, built when LibTorch was found
    set(LOCKSTEP_HAVE_TORCH 1)
  endif()
  set(NCCL_LIB_DIR "")
  if(LOCKSTEP_HAVE_NCCL)
    get_filename_component(NCCL_LIB_DIR "${NCCL_LIBRARY}" DIRECTORY)
  endif()
  set(BIN_DIR ${CMAKE_INSTALL_BINDIR})
  configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/lockstepConfig.cmake.in
    ${CMAKE_BINARY_DIR}/lockstepConfig.cmake INSTALL_DESTINATION ${dest}
    PATH_VARS CMAKE_INSTALL_INCLUDEDIR BIN_DIR)
  write_basic_package_version_file(${CMAKE_BINARY_DIR}/lockstepConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
  install(FILES ${CMAKE_BINARY_DIR}/lockstepConfig.cmake
                ${CMAKE_BINARY_DIR}/lockstepConfigVersion.cmake DESTINATION ${dest})
endfunction()

# lockstep_install_pkgconfig(layers): <libdir>/pkgconfig/lockstep.pc, for builds without
# CMake:  g++ -std=c++20 app.cpp $(pkg-config --cflags --libs lockstep). The layers are listed
# upper first (a static link needs that order); a static build adds the engines it linked in
# and oneDNN under Libs.private (pkg-config --static). The prefix is found from the file's own
# place (${pcfiledir}), so the installed tree may move.
function(lockstep_install_pkgconfig layers)
  set(order train launch ddp data nn backends comm store core)
  set(libs "")
  foreach(l ${order})
    if(lockstep_${l} IN_LIST layers)
      string(APPEND libs " -llockstep_${l}")
    endif()
  endforeach()
  set(private "")
  get_property(engines GLOBAL PROPERTY LOCKSTEP_STATIC_ENGINE_LIBS)  # comm/backends
  foreach(f ${engines})
    string(APPEND private " ${f}")
  endforeach()
  if(NOT BUILD_SHARED_LIBS AND LOCKSTEP_WITH_DNNL)
    string(APPEND private " ${DNNL_LIBRARY} -fopenmp")
  endif()
  file(RELATIVE_PATH to_prefix ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig
       ${CMAKE_INSTALL_PREFIX})
  string(REGEX REPLACE "/$" "" to_prefix "${to_prefix}")
  set(pc ${CMAKE_BINARY_DIR}/pkgconfig/lockstep.pc)
  file(GENERATE OUTPUT ${pc} CONTENT "prefix=\${pcfiledir}/${to_prefix}
libdir=\${prefix}/${CMAKE_INSTALL_LIBDIR}
includedir=\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}

Name: lockstep
Description: Synchronous distributed data-parallel training in C++ (compile with -std=c++20)
Version: ${PROJECT_VERSION}
Requires: nlohmann_json
Requires.private: openblas zlib tomlplusplus
Cflags: -I\${includedir}
Libs: -L\${libdir}${libs}
Libs.private: -lrt -ldl -pthread${private}
")
  install(FILES ${pc} DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

# lockstep_add_test(NAME SOURCES ... DEPS ... LABELS ... [TIMEOUT s]): a GoogleTest binary whose
# tests are registered one by one in CTest with the given labels and a timeout each.
function(lockstep_add_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 120)
  endif()
  add_executable(${name} ${A_SOURCES})
  target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main Threads::Threads)
  gtest_discover_tests(${name}
    DISCOVERY_MODE PRE_TEST
    NO_PRETTY_VALUES
    DISCOVERY_TIMEOUT 30
    PROPERTIES LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT})
endfunction()

# Sets `out` to whether libFuzzer harnesses are built here: LOCKSTEP_BUILD_FUZZERS is on and
# LOCKSTEP_CLANGXX (clang++) links -fsanitize=fuzzer,address,undefined, probed once per build
# directory. The main build uses g++, so each harness is compiled separately with clang++.
function(lockstep_fuzzers_available out)
  set(${out} OFF PARENT_SCOPE)
  if(NOT LOCKSTEP_BUILD_FUZZERS)
    return()
  endif()
  find_program(LOCKSTEP_CLANGXX NAMES clang++ clang++-14)
  if(LOCKSTEP_CLANGXX AND NOT DEFINED LOCKSTEP_FUZZ_OK)
    set(probe ${CMAKE_BINARY_DIR}/fuzz_probe.cpp)
    file(WRITE ${probe} "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
    execute_process(COMMAND ${LOCKSTEP_CLANGXX} -std=c++20 -fsanitize=fuzzer,address,undefined
                            ${probe} -o ${CMAKE_BINARY_DIR}/fuzz_probe
                    RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
    if(probe_rc EQUAL 0)
      set(LOCKSTEP_FUZZ_OK ON CACHE INTERNAL "clang++ -fsanitize=fuzzer works")
    else()
      set(LOCKSTEP_FUZZ_OK OFF CACHE INTERNAL "clang++ -fsanitize=fuzzer works")
    endif()
  endif()
  if(LOCKSTEP_FUZZ_OK)
    set(${out} ON PARENT_SCOPE)
  endif()
endfunction()
