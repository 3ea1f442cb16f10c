"""Development and test helpers (`make run`, the tests, the bench): outside the installed
package, so the development secret never ships in a wheel or an image."""
