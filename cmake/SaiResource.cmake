# SaiResource.cmake: gate ctest tests on Sai resource leases.
#
#   list(APPEND CMAKE_MODULE_PATH /path/to/sai-resource-manager/cmake)
#   include(SaiResource)
#
# Two styles (see docs/ctest.md for the whole story):
#
#   sai_resource(NAME AMOUNT LEASE SCOPE [WAIT SECONDS] [STRICT])
#     Fixture style.  Adds a setup test that acquires AMOUNT of NAME for LEASE
#     seconds (FIXTURES_SETUP res_<SCOPE>) and a cleanup test that releases it
#     (FIXTURES_CLEANUP res_<SCOPE>).  Tests that need it say
#       set_tests_properties(t PROPERTIES FIXTURES_REQUIRED res_<SCOPE>)
#     ONE lease is held from setup to cleanup and shared by every test of the
#     scope, however many of them ctest -j runs at once: size AMOUNT for all
#     of them together, and LEASE for the whole span of the scope.  The same
#     SCOPE may be declared in several directories: one lease, shared (the
#     first declaration's AMOUNT and LEASE; another NAME is an error).
#     The scopes of one resource take their leases one after another (each
#     setup test DEPENDS on the previous such scope's cleanup) and setup
#     tests run one at a time (RESOURCE_LOCK sai_resource.acquire), so a
#     setup test never waits for a lease its own ctest run holds, and at
#     most one slot waits at all: no -j can deadlock until an expiry.  A test
#     may require scopes of different resources, but not two scopes of one
#     resource (ctest reports a dependency cycle): use one scope instead.
#     A release after the lease expired passes with a warning; STRICT makes
#     it fail.
#
#   sai_resource_launcher(OUT_VAR NAME AMOUNT LEASE
#                         [WAIT SECONDS] [KILL_ON_EXPIRY] [GRACE SECONDS])
#     Launcher style.  Sets OUT_VAR to a command prefix; each test run through
#     it holds its own lease (random cookie) exactly as long as it runs:
#       add_test(NAME t COMMAND ${prefix} $<TARGET_FILE:t>)
#     or, with CMake >= 3.29, set_tests_properties(t PROPERTIES
#     TEST_LAUNCHER "${prefix}").
#
# The fixture style's cleanup releases by cookie, which our builder allows
# only on a path socket (its default): on an abstract one (@NAME) every local
# user could do the same, so it refuses, the cleanup test fails and the lease
# ends with ctest or at LEASE.  The launcher style works on both.
#
# Outside a Sai farm (SAI_BUILDER_RESOURCE_PROXY unset or empty when the tests
# RUN, not when CMake runs) both are no-ops that pass: the setup and cleanup
# tests succeed at once and the launcher just runs the test.
#
# Which sai-resource: the cache variable SAI_RESOURCE_COMMAND, a CMake list
# (for example "deno;run;-A;/src/sai/client.ts"), else `sai-resource` found
# on PATH.  If neither exists, a small POSIX sh stand-in is used that keeps
# the no-op behaviour outside a farm and fails the tests inside one.
#
# Cookies: the fixture's cookie is $SAI_RESOURCE_COOKIE_PREFIX (read at test
# time) + "<SCOPE>-<8 hex digits of the SHA-1 of CMAKE_BINARY_DIR>", so the
# setup and cleanup tests name the same lease with no file between them, and
# two build trees sharing one builder never collide.

include_guard(GLOBAL)

set(SAI_RESOURCE_COMMAND "" CACHE STRING
  "Command (a CMake list) that runs sai-resource; empty: find it on PATH")

set(_SAI_RESOURCE_MODULE_DIR "${CMAKE_CURRENT_LIST_DIR}")
set(_SAI_RESOURCE_NAME_RE "^[A-Za-z0-9_.-]+$")
set(_SAI_RESOURCE_UINT_RE "^[1-9][0-9]*$")

# Sets OUT to the sai-resource command list.
function(_sai_resource_command out)
  if(NOT "${SAI_RESOURCE_COMMAND}" STREQUAL "")
    set(${out} ${SAI_RESOURCE_COMMAND} PARENT_SCOPE)
    return()
  endif()
  find_program(SAI_RESOURCE_EXECUTABLE sai-resource)
  if(SAI_RESOURCE_EXECUTABLE)
    set(${out} "${SAI_RESOURCE_EXECUTABLE}" PARENT_SCOPE)
    return()
  endif()
  get_property(warned GLOBAL PROPERTY _SAI_RESOURCE_WARNED)
  if(NOT warned)
    set_property(GLOBAL PROPERTY _SAI_RESOURCE_WARNED TRUE)
    message(STATUS "sai-resource not found: resource-gated tests run "
      "ungated, and fail if SAI_BUILDER_RESOURCE_PROXY is set at test time "
      "(set SAI_RESOURCE_COMMAND to fix)")
  endif()
  set(${out} /bin/sh "${_SAI_RESOURCE_MODULE_DIR}/sai-resource-unmanaged.sh"
    PARENT_SCOPE)
endfunction()

# Checks the arguments shared by both styles; FATAL_ERROR names the caller.
function(_sai_resource_check fn NAME AMOUNT LEASE)
  if(NOT NAME MATCHES "${_SAI_RESOURCE_NAME_RE}")
    message(FATAL_ERROR
      "${fn}: NAME must match [A-Za-z0-9_.-]+, got \"${NAME}\"")
  endif()
  foreach(what AMOUNT LEASE)
    if(NOT ${what} MATCHES "${_SAI_RESOURCE_UINT_RE}")
      message(FATAL_ERROR
        "${fn}: ${what} must be a positive integer, got \"${${what}}\"")
    endif()
  endforeach()
endfunction()

function(sai_resource NAME AMOUNT LEASE SCOPE)
  cmake_parse_arguments(PARSE_ARGV 4 arg "STRICT" "WAIT" "")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR
      "sai_resource: unexpected arguments \"${arg_UNPARSED_ARGUMENTS}\"")
  endif()
  _sai_resource_check(sai_resource "${NAME}" "${AMOUNT}" "${LEASE}")
  if(NOT SCOPE MATCHES "${_SAI_RESOURCE_NAME_RE}")
    message(FATAL_ERROR
      "sai_resource: SCOPE must match [A-Za-z0-9_.-]+, got \"${SCOPE}\"")
  endif()
  # One scope in several directories (libwebsockets does this): one lease,
  # the first declaration's, shared by the tests of all of them.
  get_property(taken GLOBAL PROPERTY _SAI_RESOURCE_SCOPE_${SCOPE})
  if(taken)
    string(REPLACE " " ";" first "${taken}")
    list(GET first 0 first_name)
    if(NOT first_name STREQUAL NAME)
      message(FATAL_ERROR "sai_resource: SCOPE \"${SCOPE}\" is declared "
        "again for NAME \"${NAME}\"; it was for \"${first_name}\".  One "
        "scope is one lease of one resource")
    endif()
    if(NOT taken STREQUAL "${NAME} ${AMOUNT} ${LEASE}")
      string(REPLACE ";" ", " first "${first}")
      message(WARNING "sai_resource: SCOPE \"${SCOPE}\" is declared again "
        "with NAME, AMOUNT, LEASE = ${NAME}, ${AMOUNT}, ${LEASE}; the first "
        "declaration's ${first} holds for all its tests (one scope is one "
        "lease)")
    endif()
    return()
  endif()
  set_property(GLOBAL PROPERTY _SAI_RESOURCE_SCOPE_${SCOPE}
    "${NAME} ${AMOUNT} ${LEASE}")

  string(SHA1 tree "${CMAKE_BINARY_DIR}")
  string(SUBSTRING "${tree}" 0 8 tree)
  set(key "${SCOPE}-${tree}")
  string(LENGTH "${key}" len)
  if(len GREATER 255)
    message(FATAL_ERROR "sai_resource: SCOPE \"${SCOPE}\" is too long: the "
      "cookie key \"${key}\" must fit in 255 characters with "
      "SAI_RESOURCE_COOKIE_PREFIX")
  endif()
  _sai_resource_command(cmd)
  set(wait)
  if(DEFINED arg_WAIT)
    set(wait --wait ${arg_WAIT})
  endif()
  add_test(NAME sai_resource.${SCOPE}.acquire
    COMMAND ${cmd} ${NAME} ${AMOUNT} ${LEASE} --scope ${key} ${wait}
      --optional --detach)
  set_tests_properties(sai_resource.${SCOPE}.acquire PROPERTIES
    FIXTURES_SETUP res_${SCOPE})
  set(strict)
  if(arg_STRICT)
    set(strict --strict)
  endif()
  add_test(NAME sai_resource.${SCOPE}.release
    COMMAND ${cmd} --release-scope ${key} ${strict} --optional)
  set_tests_properties(sai_resource.${SCOPE}.release PROPERTIES
    FIXTURES_CLEANUP res_${SCOPE})
  # A setup test must never wait for a lease this same run holds: waiting
  # setup tests could fill every ctest slot while the tests that would end
  # that lease wait for a slot, until it expires (ctest -j2, budget 1, three
  # scopes).  So this scope's setup starts only after the cleanup of the
  # previous scope of the same resource, and setup tests run one at a time:
  # at most one slot waits, and only for leases held outside this run.
  get_property(previous GLOBAL PROPERTY _SAI_RESOURCE_LAST_RELEASE_${NAME})
  if(previous)
    set_property(TEST sai_resource.${SCOPE}.acquire APPEND PROPERTY
      DEPENDS ${previous})
  endif()
  set_property(GLOBAL PROPERTY _SAI_RESOURCE_LAST_RELEASE_${NAME}
    sai_resource.${SCOPE}.release)
  set_property(TEST sai_resource.${SCOPE}.acquire APPEND PROPERTY
    RESOURCE_LOCK sai_resource.acquire)
endfunction()

function(sai_resource_launcher OUT_VAR NAME AMOUNT LEASE)
  cmake_parse_arguments(PARSE_ARGV 4 arg "KILL_ON_EXPIRY" "WAIT;GRACE" "")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "sai_resource_launcher: unexpected arguments "
      "\"${arg_UNPARSED_ARGUMENTS}\"")
  endif()
  _sai_resource_check(sai_resource_launcher "${NAME}" "${AMOUNT}" "${LEASE}")
  _sai_resource_command(cmd)
  set(extra)
  if(DEFINED arg_WAIT)
    list(APPEND extra --wait ${arg_WAIT})
  endif()
  if(arg_KILL_ON_EXPIRY)
    list(APPEND extra --kill-on-expiry)
  endif()
  if(DEFINED arg_GRACE)
    list(APPEND extra --grace ${arg_GRACE})
  endif()
  set(${OUT_VAR} ${cmd} ${NAME} ${AMOUNT} ${LEASE} ${extra} --optional --
    PARENT_SCOPE)
endfunction()
